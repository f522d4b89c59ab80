"""GSS-TSIG (Kerberos-signed) RFC 2136 updates against a real BIND 9 and the real throwaway KDC of
tests/kdc.py: what AD-integrated zones accept. named gets the DNS/localhost keytab
(``tkey-gssapi-keytab``) and an update-policy granting only ``agent@TEST.EXAMPLE``."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import dns.update
import pytest
import structlog
import yaml

from agent.config import DnsServer
from agent.configfile import demo_dir, load_config
from agent.domain.errors import DnsBadKey, DnsRefused
from agent.domain.model import RecordChange, RecordType
from agent.drivers.rfc2136 import Rfc2136Dns
from agent.engine.model import OperationKind
from agent.engine.service import Engine
from agent.engine.store import Store
from agent.wiring import connect
from tests.bind import FORWARD_ZONE, REVERSE4_ZONE, BindServer
from tests.integration.test_dns_end_to_end import _records, _run, _zone_texts
from tests.kdc import Kdc, require_gssapi

pytestmark = pytest.mark.bind

SPN = "DNS/localhost@TEST.EXAMPLE"


def require_kinit() -> str:
    found = shutil.which("kinit")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kinit (krb5-user) is missing from the CI image")
        pytest.skip("kinit (krb5-user) is not installed")
    return found


class Realm:
    def __init__(self, kdc: Kdc, bind: BindServer, keytabs: dict[str, Path]) -> None:
        self.kdc, self.bind, self.keytabs = kdc, bind, keytabs


def _realm(named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           zones: dict[str, str] | None = None) -> Iterator[Realm]:
    require_gssapi()
    kdc = Kdc(tmp_path / "krb")
    for name, value in kdc.environ().items():
        monkeypatch.setenv(name, value)  # before gssapi reads the krb5 config, and inherited by named
    kdc.start()
    try:
        service = kdc.principal("DNS/localhost")
        keytabs = {p: kdc.principal(p) for p in ("agent", "intruder", f"host/web9.{FORWARD_ZONE.rstrip('.')}")}
        for p, path in keytabs.items():
            monkeypatch.setenv(f"KT_{p.split('/')[0].upper()}", str(path))
        bind = BindServer(tmp_path / "named", named=named, zones=zones, update_keys=(), gss_keytab=service,
                          grants=[f"grant agent@{kdc.realm} zonesub ANY",
                                                   f"grant {kdc.realm} krb5-self . A"])
        bind.start()
        try:
            yield Realm(kdc, bind, keytabs)
        finally:
            bind.stop()
    finally:
        kdc.stop()


@pytest.fixture
def realm(named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Realm]:
    yield from _realm(named, tmp_path, monkeypatch)


def _driver(bind: BindServer, principal: str = "agent@TEST.EXAMPLE", keytab: str = "env:KT_AGENT",
            zones: tuple[str, ...] = (FORWARD_ZONE, REVERSE4_ZONE), **gss: str) -> Rfc2136Dns:
    server = DnsServer.model_validate({
        "name": "dns-ad", "kind": "rfc2136", "address": bind.host, "port": bind.port, "timeout_s": 5,
        "gss_tsig": {"principal": principal, "keytab": keytab, "server_principal": SPN, **gss},
        "verify_timeout_s": 5,
    })
    return Rfc2136Dns(server, zones)


def _change(zone: str, name: str, rtype: str, new: tuple[str, ...], expected: tuple[str, ...] = (),
            ttl: int = 300) -> RecordChange:
    return RecordChange(zone=zone, name=name, type=RecordType(rtype), ttl=ttl, expected=expected, new_values=new)


def test_a_and_ptr_updates_signed_with_a_kerberos_ticket_apply_and_are_visible(realm: Realm) -> None:
    driver = _driver(realm.bind)
    driver.apply(FORWARD_ZONE, [_change(FORWARD_ZONE, f"gss1.{FORWARD_ZONE}", "A", ("192.0.2.77",))])
    ptr = driver.reverse_name("192.0.2.77")
    driver.apply(REVERSE4_ZONE, [_change(REVERSE4_ZONE, ptr, "PTR", (f"gss1.{FORWARD_ZONE}",))])
    assert realm.bind.rrset(f"gss1.{FORWARD_ZONE}", "A") == (300, ("192.0.2.77",))
    assert realm.bind.rrset(ptr, "PTR") == (300, (f"gss1.{FORWARD_ZONE}",))
    assert "key agent\\@TEST.EXAMPLE: updating zone" in realm.bind.log_tail(20000)


def test_an_unsigned_update_is_refused(realm: Realm) -> None:
    update = dns.update.UpdateMessage(FORWARD_ZONE)
    update.add(f"evil.{FORWARD_ZONE}", 300, "A", "192.0.2.66")
    assert realm.bind.send_update(update).rcode() == dns.rcode.REFUSED
    assert realm.bind.rrset(f"evil.{FORWARD_ZONE}", "A") is None


def test_an_update_signed_by_a_principal_the_policy_does_not_grant_is_refused_naming_it(realm: Realm) -> None:
    intruder = _driver(realm.bind, principal="intruder@TEST.EXAMPLE", keytab="env:KT_INTRUDER")
    with pytest.raises(DnsRefused) as caught:
        intruder.apply(FORWARD_ZONE, [_change(FORWARD_ZONE, f"evil2.{FORWARD_ZONE}", "A", ("192.0.2.67",))])
    assert caught.value.fields["key"] == "intruder@TEST.EXAMPLE"
    assert "dns-ad" in caught.value.message
    assert realm.bind.rrset(f"evil2.{FORWARD_ZONE}", "A") is None
    assert "intruder\\@TEST.EXAMPLE" in realm.bind.log_tail(20000)


def test_a_host_principal_may_update_its_own_a_record_only_krb5_self(realm: Realm) -> None:
    host = _driver(realm.bind, principal="host/web9.example.test@TEST.EXAMPLE", keytab="env:KT_HOST")
    host.apply(FORWARD_ZONE, [_change(FORWARD_ZONE, f"web9.{FORWARD_ZONE}", "A", ("192.0.2.99",))])
    assert realm.bind.rrset(f"web9.{FORWARD_ZONE}", "A") == (300, ("192.0.2.99",))
    with pytest.raises(DnsRefused):
        host.apply(FORWARD_ZONE, [_change(FORWARD_ZONE, f"web8.{FORWARD_ZONE}", "A", ("192.0.2.98",))])
    assert realm.bind.rrset(f"web8.{FORWARD_ZONE}", "A") is None


def test_a_principal_with_no_key_in_the_keytab_fails_naming_server_and_principal(realm: Realm) -> None:
    nobody = _driver(realm.bind, principal="nobody@TEST.EXAMPLE")  # agent's keytab: no key for nobody
    with pytest.raises(DnsBadKey) as caught:
        nobody.apply(FORWARD_ZONE, [_change(FORWARD_ZONE, f"x.{FORWARD_ZONE}", "A", ("192.0.2.68",))])
    assert "nobody@TEST.EXAMPLE" in caught.value.message and "dns-ad" in caught.value.message
    assert "no ticket" in caught.value.message, caught.value.message
    assert realm.bind.rrset(f"x.{FORWARD_ZONE}", "A") is None


def test_an_unset_keytab_variable_is_named(realm: Realm) -> None:
    driver = _driver(realm.bind, keytab="env:KT_NOT_SET")
    with pytest.raises(DnsBadKey, match="KT_NOT_SET is not set"):
        driver.probe(FORWARD_ZONE)


def test_an_unknown_service_principal_is_reported_as_such(realm: Realm) -> None:
    driver = _driver(realm.bind, server_principal="DNS/nosuch.test.example@TEST.EXAMPLE")
    with pytest.raises(DnsBadKey, match="no such service principal"):
        driver.probe(FORWARD_ZONE)


def test_the_context_is_renegotiated_when_the_server_has_forgotten_it(realm: Realm) -> None:
    driver = _driver(realm.bind)
    driver.apply(FORWARD_ZONE, [_change(FORWARD_ZONE, f"r1.{FORWARD_ZONE}", "A", ("192.0.2.81",))])
    realm.bind.stop()
    (realm.bind.dir / "_default.tsigkeys").unlink(missing_ok=True)  # named would reload the key from it
    realm.bind.start()
    with structlog.testing.capture_logs() as events:
        driver.apply(FORWARD_ZONE, [_change(FORWARD_ZONE, f"r2.{FORWARD_ZONE}", "A", ("192.0.2.82",))])
    assert [e for e in events if e["event"] == "dns.gss_renegotiate"], "the stale context was refused first"
    assert realm.bind.rrset(f"r2.{FORWARD_ZONE}", "A") == (300, ("192.0.2.82",))


def test_the_context_is_renegotiated_before_it_expires_and_reused_until_then(
        realm: Realm, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.dns.gss

    driver = _driver(realm.bind)
    with structlog.testing.capture_logs() as events:
        driver.apply(FORWARD_ZONE, [_change(FORWARD_ZONE, f"e1.{FORWARD_ZONE}", "A", ("192.0.2.91",))])
        driver.apply(FORWARD_ZONE, [_change(FORWARD_ZONE, f"e2.{FORWARD_ZONE}", "A", ("192.0.2.92",))])
        negotiated = [e for e in events if e["event"] == "dns.gss_negotiated"]
        assert len(negotiated) == 1, "one context for both updates"
        assert 0 < negotiated[0]["lifetime_s"] <= 3600  # what BIND grants
        later = agent.dns.gss._now() + negotiated[0]["lifetime_s"]
        monkeypatch.setattr(agent.dns.gss, "_now", lambda: later)
        driver.apply(FORWARD_ZONE, [_change(FORWARD_ZONE, f"e3.{FORWARD_ZONE}", "A", ("192.0.2.93",))])
    negotiated = [e for e in events if e["event"] == "dns.gss_negotiated"]
    assert len(negotiated) == 2 and negotiated[0]["key_name"] != negotiated[1]["key_name"]
    assert not [e for e in events if e["event"] == "dns.gss_renegotiate"], "no refusal was needed"
    assert realm.bind.rrset(f"e3.{FORWARD_ZONE}", "A") == (300, ("192.0.2.93",))


def test_probe_proves_the_kerberos_signed_soa_query(realm: Realm) -> None:
    assert "verifies" in _driver(realm.bind).probe(FORWARD_ZONE)


# ----------------------------------------------------------- the demo's record set, over GSS

def _demo_zones() -> dict[str, str]:
    return _zone_texts(yaml.safe_load((demo_dir() / "demo-inventory.yaml").read_text()))


@pytest.fixture
def demo_realm(named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Realm]:
    yield from _realm(named, tmp_path, monkeypatch, zones=_demo_zones())


def test_the_demo_record_set_applies_verifies_and_restores_exactly_over_gss(demo_realm: Realm) -> None:
    bind = demo_realm.bind
    forward = "corp.contoso.example."
    driver = _driver(bind, zones=tuple(bind.zones))
    names = [(f"{h}.{forward}", RecordType.A) for h in ("sql01", "web01", "app01", "app02")]
    before = driver.read(forward, names)
    assert before, "the demo zone holds the application servers"
    moved = [
        _change(forward, rs.name, "A", (f"172.16.1.{10 + i}",), expected=rs.values, ttl=60)
        for i, rs in enumerate(before)
    ]
    driver.apply(forward, moved)
    report = driver.verify(forward, moved)
    assert report is not None and report.ok, report.summary() if report else None
    for i, rs in enumerate(before):
        assert bind.rrset(rs.name, "A") == (60, (f"172.16.1.{10 + i}",))
    restore = [
        _change(forward, rs.name, "A", rs.values, expected=(f"172.16.1.{10 + i}",), ttl=rs.ttl)
        for i, rs in enumerate(before)
    ]
    driver.apply(forward, restore)
    assert driver.read(forward, names) == before
    driver.apply(forward, restore)  # a retry of an applied restore: already in place, nothing refused
    assert driver.read(forward, names) == before


def test_a_ccache_from_kinit_signs_as_well(realm: Realm, tmp_path: Path) -> None:
    kinit = require_kinit()
    ccache = tmp_path / "agent.ccache"
    subprocess.run([kinit, "-kt", str(realm.keytabs["agent"]), "-c", f"FILE:{ccache}", "agent@TEST.EXAMPLE"],
                   check=True, capture_output=True, env={**os.environ, **realm.kdc.environ()})
    os.environ["AGENT_CCACHE"] = f"FILE:{ccache}"
    try:
        server = DnsServer.model_validate({
            "name": "dns-ad", "kind": "rfc2136", "address": realm.bind.host, "port": realm.bind.port,
            "gss_tsig": {"principal": "agent@TEST.EXAMPLE", "ccache": "env:AGENT_CCACHE", "server_principal": SPN},
        })
        Rfc2136Dns(server, (FORWARD_ZONE,)).apply(
            FORWARD_ZONE, [_change(FORWARD_ZONE, f"cc.{FORWARD_ZONE}", "A", ("192.0.2.95",))])
    finally:
        del os.environ["AGENT_CCACHE"]
    assert realm.bind.rrset(f"cc.{FORWARD_ZONE}", "A") == (300, ("192.0.2.95",))


def test_the_engine_fails_over_and_back_through_wiring_over_gss(demo_realm: Realm, tmp_path: Path) -> None:
    """The demo's planned failover and failback with its DNS server configured for gss_tsig:
    wiring builds the driver (no refusal any more), every update is Kerberos-signed."""
    for name in ("demo.yaml", "demo-inventory.yaml"):
        shutil.copy(demo_dir() / name, tmp_path / name)
    cfg = yaml.safe_load((tmp_path / "demo.yaml").read_text())
    cfg["agent"]["data_dir"] = str(tmp_path / "var")
    for server in cfg["dns"]["servers"]:
        if server["name"] == "dns-contoso":
            server.clear()
            server.update({"name": "dns-contoso", "kind": "rfc2136", "address": demo_realm.bind.host,
                           "port": demo_realm.bind.port, "verify_timeout_s": 5,
                           "gss_tsig": {"principal": "agent@TEST.EXAMPLE", "keytab": "env:KT_AGENT",
                                        "server_principal": SPN}})
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    loaded = load_config(tmp_path / "demo.yaml")
    connection = connect(loaded)
    store = Store.for_path(tmp_path / "var" / "agent.sqlite")
    try:
        engine = Engine(loaded.config, connection.ports, store, sleep=lambda s: None)
        before = _records(demo_realm.bind)
        _run(engine, OperationKind.PLANNED_FAILOVER)
        assert demo_realm.bind.rrset("app01.corp.contoso.example.", "A") == (60, ("172.16.1.10",))
        for kind in (OperationKind.COMMIT, OperationKind.REVERSE, OperationKind.FAILBACK):
            _run(engine, kind)
        assert _records(demo_realm.bind) == before
    finally:
        connection.close()
        store.close()
    assert "key agent\\@TEST.EXAMPLE: updating zone 'corp.contoso.example/IN'" in demo_realm.bind.log_tail(50000)


def test_a_server_that_does_not_do_gss_tsig_refuses_the_negotiation_naming_server_and_principal(
        realm: Realm, tmp_path: Path) -> None:
    plain = BindServer(tmp_path / "plain", named=realm.bind.named, update_keys=())  # no tkey-gssapi-keytab
    plain.start()
    try:
        with pytest.raises(DnsRefused) as caught:
            _driver(plain).apply(FORWARD_ZONE, [_change(FORWARD_ZONE, f"p.{FORWARD_ZONE}", "A", ("192.0.2.96",))])
    finally:
        plain.stop()
    message = caught.value.message
    assert "dns-ad" in message and "agent@TEST.EXAMPLE" in message and "Kerberos-signed" in message, message
