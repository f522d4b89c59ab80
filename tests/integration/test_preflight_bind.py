"""Preflight against a real BIND 9: the RFC 2136 driver's probe is an SOA query signed with the
update key, so a wrong secret or an unknown key is refused (BADSIG / BADKEY) by ``validate --deep``
and by ``run`` -- naming the server, the key and the config line -- before anything changes,
instead of at the first DNS update after group 0 has failed over."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cli import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, session
from agent.configfile import DEMO_PLAN, load_config
from agent.domain.errors import DnsBadKey, DnsNotAuthoritative, DnsRefused
from agent.errors import UnreachableError
from agent.wiring import connect
from tests.bind import FORWARD_ZONE, REVERSE4_ZONE, BindServer
from tests.integration.conftest import DriverFactory
from tests.integration.test_dns_end_to_end import _zone_texts
from tests.rigs import copy_demo, sim_of
from tests.rigs import run_cli as run

pytestmark = [pytest.mark.bind, pytest.mark.usefixtures("cli_env")]

SECRET_VAR = "FA_PREFLIGHT_TSIG"


# ----------------------------------------------------------------------------- the driver's probe


def test_the_right_key_gets_a_signed_answer(make_driver: DriverFactory, bind: BindServer) -> None:
    answer = make_driver().probe(FORWARD_ZONE)
    assert f"serves zone {FORWARD_ZONE} (SOA serial {bind.serial(FORWARD_ZONE)})" in answer
    assert "signed with TSIG key 'agent-key' verifies" in answer
    # Another algorithm (hmac-sha512), another zone: the reply is verified with that key.
    assert "TSIG key 'agent-key-512' verifies" in make_driver(key="agent-key-512").probe(REVERSE4_ZONE)


@pytest.mark.parametrize(
    ("driver", "error", "says"),
    [
        ({"secret": "d3Jvbmctc2VjcmV0LW9mLXRoZS1yaWdodC1sZW5ndGgtMzI="}, DnsBadKey, "(BADSIG)"),
        ({"key": "nobody-key"}, DnsBadKey, "does not know the TSIG key 'nobody-key' (BADKEY)"),
        ({"secret": "not base64 at all!"}, DnsBadKey, "is not valid base64"),
    ],
)
def test_a_wrong_key_is_refused_by_bind_naming_server_and_key(make_driver: DriverFactory, bind: BindServer,
                                                              driver: dict[str, Any], error: type, says: str) -> None:
    with pytest.raises(error) as caught:
        make_driver(**driver).probe(FORWARD_ZONE)
    assert says in caught.value.message and f"key {caught.value.fields['key']!r}" in caught.value.message
    assert caught.value.fields["server"] == "dns-test" and caught.value.fields["address"].endswith(str(bind.port))


def test_a_zone_the_server_does_not_serve_or_a_stopped_server(make_driver: DriverFactory, bind: BindServer) -> None:
    with pytest.raises(DnsRefused, match="it does not serve this zone"):
        make_driver().probe("nowhere.test.")
    with pytest.raises(DnsNotAuthoritative, match="does not serve zone host1.example.test. with authority"):
        make_driver().probe("host1." + FORWARD_ZONE)
    bind.stop()
    with pytest.raises(UnreachableError):
        make_driver(timeout_s=1).probe(FORWARD_ZONE)


# ------------------------------------------------------------------------------ through the CLI


@pytest.fixture
def site(named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, BindServer]:
    """The demo with its production DNS server on a real BIND holding the demo's records; the
    TSIG secret comes from $FA_PREFLIGHT_TSIG (set to the right secret: tests change it)."""
    monkeypatch.setattr(session, "is_interactive", lambda: False)
    config = copy_demo(tmp_path / "site")
    inventory = yaml.safe_load((config.parent / "demo-inventory.yaml").read_text())
    bind = BindServer(tmp_path / "named", zones=_zone_texts(inventory), named=named).start()
    data = yaml.safe_load(config.read_text())
    data["dns"]["servers"][0] = {"name": "dns-contoso", "kind": "rfc2136", "address": bind.host, "port": bind.port,
                                 "tsig": {"name": "agent-key", "secret": f"env:{SECRET_VAR}"}, "verify_timeout_s": 5}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv(SECRET_VAR, bind.keys["agent-key"].secret)
    try:
        yield config, bind
    finally:
        bind.stop()


def _zones(config: Path) -> list[str]:
    return [z["name"] + "." for z in yaml.safe_load(config.read_text())["dns"]["zones"] if z["server"] == "dns-contoso"]


def test_validate_deep_passes_with_the_right_key(site: tuple[Path, BindServer]) -> None:
    config, _ = site
    result = run("validate", "--deep", "--config", str(config))
    assert result.exit_code == EXIT_OK, result.output
    assert "config OK" in result.stdout
    assert "preflight: all 18 checks passed" in result.stdout and "(1 secret, 2 VMM servers" in result.stdout


def test_validate_deep_with_a_wrong_key_names_the_server_and_key_and_exits_2(site: tuple[Path, BindServer],
                                                                              monkeypatch) -> None:
    config, bind = site
    monkeypatch.setenv(SECRET_VAR, bind.keys["other-key"].secret)  # a real key, but not agent-key's secret
    assert run("validate", "--config", str(config)).exit_code == EXIT_OK  # the plain reads never notice

    result = run("validate", "--deep", "--config", str(config))
    assert result.exit_code == EXIT_REFUSED, result.output
    err = result.stderr
    line = next(i for i, text in enumerate(config.read_text().splitlines(), start=1) if text.strip() == "tsig:")
    for zone in _zones(config):
        assert (f"demo.yaml:{line}: dns.servers[0].tsig: DNS server dns-contoso, zone {zone}: DNS server dns-contoso "
                f"(127.0.0.1:{bind.port}) rejected the signature made with TSIG key 'agent-key' (BADSIG)") in err, err
    assert f"{len(_zones(config))} problems in" in err and bind.keys["other-key"].secret not in result.output

    doc = json.loads(run("validate", "--deep", "--json", "--config", str(config)).stdout)
    assert doc["ok"] is False
    assert {(p["key"], p["code"]) for p in doc["problems"]} == {("dns.servers[0].tsig", "dns_bad_key")}


def test_run_with_a_wrong_key_changes_nothing_and_records_no_operation(site: tuple[Path, BindServer],
                                                                       monkeypatch) -> None:
    config, bind = site
    assert run("validate", "--config", str(config)).exit_code == EXIT_OK  # seeds the simulated sites
    with connect(load_config(config)) as connection:
        sites = sim_of(connection)
    before = sites.snapshot()
    serials = {zone: bind.serial(zone) for zone in _zones(config)}
    records = {name: bind.rrset(name, "A") for name in ("sql01.corp.contoso.example.", "app01.corp.contoso.example.")}
    monkeypatch.setenv(SECRET_VAR, bind.keys["other-key"].secret)

    result = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "planned", "--yes")
    assert result.exit_code == EXIT_REFUSED, result.output
    assert re.search(r"dns\.servers\[0\]\.tsig: DNS server dns-contoso, zone corp\.contoso\.example\.: .*\(BADSIG\)",
                     result.stderr)
    assert "Nothing was changed" in result.stderr or "before anything was changed" in result.stderr
    assert sites.snapshot() == before
    assert {zone: bind.serial(zone) for zone in serials} == serials
    assert {name: bind.rrset(name, "A") for name in records} == records
    assert json.loads(run("ops", "list", "--json", "--config", str(config)).stdout) == []
    audit = json.loads(run("ops", "audit", "--json", "--config", str(config)).stdout)
    # The first open of a store records its creation (the missing-store check); nothing else happened.
    assert [a["action"] for a in audit if a["action"] != "store.created"] == ["run.refused_by_preflight"]

    # An unset variable: named with its config key, and still nothing runs.
    monkeypatch.delenv(SECRET_VAR)
    unset = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "planned", "--yes")
    assert unset.exit_code == EXIT_REFUSED
    assert f"dns.servers[0].tsig.secret: the TSIG key 'agent-key' of DNS server dns-contoso (env:{SECRET_VAR}): " \
        f"environment variable {SECRET_VAR} is not set" in unset.stderr
    assert sites.snapshot() == before and json.loads(run("ops", "list", "--json", "--config", str(config)).stdout) == []


def test_a_stopped_dns_server_exits_3(site: tuple[Path, BindServer]) -> None:
    config, bind = site
    bind.stop()
    result = run("validate", "--deep", "--config", str(config))
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert "dns.servers[0]: DNS server dns-contoso, zone corp.contoso.example.: " in result.stderr
    assert "try again when they answer" in result.stderr


def test_a_zone_the_server_does_not_serve_is_named_at_its_config_entry(site: tuple[Path, BindServer]) -> None:
    config, _ = site
    data = yaml.safe_load(config.read_text())
    data["dns"]["zones"].append({"name": "nowhere.example", "server": "dns-contoso"})
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run("validate", "--deep", "--config", str(config))
    assert result.exit_code == EXIT_REFUSED, result.output
    key = f"dns.zones[{len(data['dns']['zones']) - 1}]"
    assert f"{key}: DNS server dns-contoso, zone nowhere.example.: " in result.stderr
    assert "refused the signed SOA query for zone nowhere.example. (REFUSED): it does not serve this zone" \
        in result.stderr
