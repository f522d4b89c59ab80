"""The Windows DNS driver against the simulated one: the same calls through :class:`SimDns` and
through :class:`PsWindowsDns` + the handlers over :class:`SimRemote` give the same results and
leave equal worlds; drift changes nothing; one refused record set leaves the others applied."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import DnsServer, Endpoint
from agent.domain.errors import DnsBatchError
from agent.domain.model import RecordChange, RecordType
from agent.drivers.ps.windns import PsWindowsDns
from agent.drivers.sim import SimWorld
from agent.errors import AgentError, TransientError
from agent.ports import Dns
from tests.remotesim import SimRemote, Target
from tests.rigs import normalised
from tests.unit.conftest import TWO_SITES

ZONE = "example.com."
REV = "2.168.192.in-addr.arpa."
A, AAAA, PTR = RecordType.A, RecordType.AAAA, RecordType.PTR


def server(name: str = "dns-main", **extra: Any) -> DnsServer:
    return DnsServer(name=name, kind="windows", endpoint=Endpoint(
        transport="psrp", address=f"{name}.sim.test", username="agent", credential="env:FA_SIM_PASSWORD", auth="basic",
        ssl=False), **extra)


def remote_for(world: SimWorld) -> SimRemote:
    return SimRemote(world, {f"{n}.sim.test": Target("dns", None, n) for n in ("dns-main", "dns-test")})


def change(name: str, rtype: RecordType, expected: tuple[str, ...], new: tuple[str, ...], *, ttl: int = 300,
           zone: str = ZONE) -> RecordChange:
    return RecordChange(zone=zone, name=name, type=rtype, ttl=ttl, expected=expected, new_values=new)


def outcome(run: Callable[[], Any]) -> Any:
    """A call's result as a user sees it: the value, or the error's code and what it names."""
    try:
        value = run()
    except AgentError as exc:
        return ("error", exc.code, exc.fields.get("record"), exc.fields.get("records"), exc.fields.get("found"))
    if isinstance(value, list):
        return [v.model_dump(mode="json") for v in value]
    if value is not None and hasattr(value, "ok"):
        return ("verified", value.ok, len(value.to_dict()["servers"][0]["stale"]))
    return value


def scenario(dns: Dns) -> list[Any]:
    web01 = change("web01.example.com.", A, ("192.168.1.10",), ("172.16.1.10",))
    calls: list[Callable[[], Any]] = [
        lambda: dns.read(ZONE, [("web01.example.com.", A), ("WEB02.Example.com.", A), ("nope.example.com.", A),
                                ("v6web01.example.com.", AAAA), ("example.com.", A)]),
        lambda: dns.read(REV, [("10.2.168.192.in-addr.arpa.", PTR)]),
        lambda: dns.read("nozone.test.", [("a.nozone.test.", A)]),  # not authoritative
        lambda: dns.read(ZONE, [("web01.other.test.", A)]),  # NOTZONE
        lambda: dns.apply(ZONE, [web01, change("new01.example.com.", A, (), ("172.16.1.11",), ttl=60),
                                 change("web02.example.com.", A, ("192.168.1.12", "192.168.1.11"), ("192.168.1.11",)),
                                 change("v6web01.example.com.", AAAA, ("2001:db8:1::10",),
                                        ("2001:DB8:1:0::20", "2001:db8:1::21"))]),
        lambda: dns.verify(ZONE, [web01]),
        lambda: dns.apply(ZONE, [web01]),  # drift: already in effect
        lambda: dns.apply(ZONE, [web01.model_copy(update={"ttl": 30, "expected": ("172.16.1.10",)})]),  # TTL only
        lambda: dns.apply(ZONE, [  # one set changed since read: nothing applied
            change("app01.example.com.", A, ("192.168.2.10",), ()),
            change("web01.example.com.", A, ("192.168.1.10",), ("172.16.1.99",))]),
        lambda: dns.read(ZONE, [("app01.example.com.", A), ("web01.example.com.", A)]),
        lambda: dns.apply(ZONE, [change("x.example.com.", A, (), ("1.2.3.4",)),
                                 change("X.example.com.", A, (), ("1.2.3.5",))]),  # same set twice
        lambda: dns.apply(ZONE, [change("y.example.com.", A, (), ("300.1.1.1",))]),  # malformed
        lambda: dns.apply(REV, [change("11.2.168.192.in-addr.arpa.", PTR, (), ("web02.example.com",), zone=REV)]),
        lambda: dns.apply(REV, [change("11.2.168.192.in-addr.arpa.", PTR, (), ("Web02.Example.com.",), zone=REV),
                                change("10.2.168.192.in-addr.arpa.", PTR, ("app01.example.com.",), (), zone=REV)]),
        lambda: dns.read(REV, [("11.2.168.192.in-addr.arpa.", PTR), ("10.2.168.192.in-addr.arpa.", PTR)]),
        lambda: dns.apply(ZONE, [change("web01.example.com.", A, ("172.16.1.10",), ("192.168.1.10",), ttl=300,
                                        zone="other.test.")]),
        lambda: dns.verify(ZONE, [change("web01.example.com.", A, (), ("10.9.9.9",))]),  # stale
        lambda: dns.probe(ZONE) and "answered",
        lambda: dns.probe("nozone.test."),
        lambda: dns.apply(ZONE, []),
    ]
    return [outcome(c) for c in calls]


def test_every_method_matches_the_simulated_driver(tmp_path: Path) -> None:
    sim_world = SimWorld.open(TWO_SITES, tmp_path / "sim.json")
    ps_world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    remote = remote_for(ps_world)
    expected = scenario(sim_world.dns("dns-main"))
    got = scenario(PsWindowsDns(remote, server(), zones=[ZONE]))
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"call {i} of the scenario"
    assert normalised(ps_world.snapshot()) == normalised(sim_world.snapshot())
    # Refused before sending: NOTZONE, a set twice, a malformed value, a relative PTR target,
    # another zone's change, no change at all; verify reads back, one script run per call.
    assert len(remote.calls) == len(expected) - 6
    assert {address for address, _, _ in remote.calls} == {"dns-main.sim.test"}


def test_names_travel_relative_to_the_zone_as_json(tmp_path: Path) -> None:
    remote = remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json"))
    dns = PsWindowsDns(remote, server(), zones=[ZONE])
    dns.read(ZONE, [("example.com.", A), ("Web01.example.com.", A)])
    [(_, script, bound)] = remote.calls
    assert script == "dns/Get-AgentDnsRecord"
    assert bound["ComputerName"] == "dns-main.sim.test" and bound["ZoneName"] == "example.com"
    assert json.loads(bound["NamesJson"]) == [{"name": "@", "type": "A"}, {"name": "web01", "type": "A"}]


def test_drift_answers_changed_false_and_sends_the_batch_once(tmp_path: Path) -> None:
    world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    remote = remote_for(world)
    dns = PsWindowsDns(remote, server(), zones=[ZONE])
    wanted = change("web01.example.com.", A, ("192.168.1.10",), ("172.16.1.10",))
    dns.apply(ZONE, [wanted])
    dns.apply(ZONE, [wanted])  # pinned to what no longer holds, but already in effect: no change, no refusal
    assert len(world.calls("dns.apply")) == 1, "the second run changed nothing"
    assert [name for _, name, _ in remote.calls] == ["dns/Set-AgentDnsRecord"] * 2
    [rs] = dns.read(ZONE, [("web01.example.com.", A)])
    assert rs.values == ("172.16.1.10",) and rs.ttl == 300


def test_partial_failure_keeps_the_other_record_sets(tmp_path: Path) -> None:
    world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    remote = remote_for(world)
    dns = PsWindowsDns(remote, server(), zones=[ZONE])
    world.inject({"call": "dns.apply", "target": "app01*", "fault": "permanent"})
    with pytest.raises(DnsBatchError) as failed:
        dns.apply(ZONE, [change("web01.example.com.", A, ("192.168.1.10",), ("172.16.1.10",)),
                         change("app01.example.com.", A, ("192.168.2.10",), ("172.16.2.10",)),
                         change("new01.example.com.", A, (), ("172.16.1.11",))])
    assert failed.value.category == "permanent"
    assert [f.fields["records"] for f in failed.value.failures] == [["app01.example.com. A"]]
    assert failed.value.fields["applied_batches"] == 2
    found = {rs.name: rs.values for rs in dns.read(ZONE, [("web01.example.com.", A), ("app01.example.com.", A),
                                                            ("new01.example.com.", A)])}
    assert found == {"web01.example.com.": ("172.16.1.10",), "app01.example.com.": ("192.168.2.10",),
                     "new01.example.com.": ("172.16.1.11",)}
    assert len([c for c in remote.calls if c[1] == "dns/Set-AgentDnsRecord"]) == 1


def test_a_windows_server_without_a_remoting_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="remoting transport"):
        DnsServer(name="dc1", kind="windows", endpoint=Endpoint())


def test_verify_asks_the_configured_servers_over_dns_and_reports_one_that_does_not_answer(tmp_path: Path) -> None:
    remote = remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json"))
    dns = PsWindowsDns(remote, server(verify_servers=["127.0.0.1:9"], verify_timeout_s=0.5), zones=[ZONE])
    report = dns.verify(ZONE, [change("web01.example.com.", A, ("192.168.1.10",), ("172.16.1.10",))])
    assert report is not None and not report.ok
    assert "127.0.0.1" in report.summary()
    assert remote.calls == [], "the other servers are asked, not this one's cmdlets"


def test_a_record_that_times_out_makes_the_batch_transient_and_a_retry_finishes_it(tmp_path: Path) -> None:
    world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    dns = PsWindowsDns(remote_for(world), server(), zones=[ZONE])
    world.inject({"call": "dns.apply", "target": "app01*", "fault": "transient", "count": 1})
    changes = [change("web01.example.com.", A, ("192.168.1.10",), ("172.16.1.10",)),
               change("app01.example.com.", A, ("192.168.2.10",), ("172.16.2.10",))]
    with pytest.raises(TransientError) as failed:
        dns.apply(ZONE, changes)
    assert failed.value.fields["records"] == ["app01.example.com. A"]
    dns.apply(ZONE, changes)  # web01 is in effect and left out; app01 still holds what it is pinned to
    assert [rs.values for rs in dns.read(ZONE, [(c.name, A) for c in changes])] == [("172.16.1.10",),
                                                                                    ("172.16.2.10",)]


@pytest.mark.parametrize("transport", ["psrp", "winrm"])
def test_wiring_reaches_a_windows_server_over_its_endpoints_transport(tmp_path: Path, transport: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.configfile import load_config
    from agent.wiring import connect
    from tests.remotesim import over_psrp, sim_remote
    from tests.rigs import copy_demo

    monkeypatch.setenv("FA_SIM_PASSWORD", "not-used-in-process")
    loaded = load_config(copy_demo(tmp_path / "config", edit=over_psrp(("dns",), transport=transport)))
    remote = sim_remote(loaded)
    with connect(loaded, remotes={transport: remote}) as connection:
        drill = connection.ports.dns["dns-drill"]
        assert isinstance(drill, PsWindowsDns)
        assert "dns-drill" in drill.probe("corp.contoso.example.")
    [(address, script, bound)] = remote.calls
    assert (address, script) == ("dns-drill.sim.test", "dns/Get-AgentDnsZoneProbe")
    assert bound == {"ComputerName": "dns-drill.sim.test", "ZoneName": "corp.contoso.example"}


HOSTILE = ["o'neil", 'say"hi', "a;b", "$(evil)", "back`tick", "new\nline", "#hash", "ünï", "x" * 100_000]


def test_hostile_record_names_travel_as_data_never_as_script_text(tmp_path: Path) -> None:
    remote = remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json"))
    dns = PsWindowsDns(remote, server(), zones=[ZONE])
    names = [f"{label}.example.com." for label in HOSTILE]
    dns.apply(ZONE, [change(n, A, (), ("10.9.9.9",)) for n in names])
    found = dns.read(ZONE, [(n, A) for n in names])
    assert [rs.name for rs in found] == names
    sent = json.loads(remote.calls[0][2]["ChangesJson"])
    assert [c["name"] for c in sent] == HOSTILE, "relative names arrive intact as one bound parameter"
