"""Preflight on the simulated demo sites: ``validate --deep``, ``validate --json`` and ``run``
refuse, naming what failed and where it is in the config, before anything changes; the probes run
concurrently under one deadline. (Against a real BIND with a wrong TSIG key:
``tests/integration/test_preflight_bind.py``.)"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from agent.cli import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_WAITING
from agent.configfile import DEMO_PLAN, load_config
from agent.domain.errors import DnsNotAuthoritative
from agent.drivers.dispatch import HyperVByHost, RoutesByRouter, ScriptsByHost
from agent.drivers.sim import SimWorld
from agent.errors import NotFoundError
from agent.preflight import preflight
from agent.wiring import connect
from tests.rigs import copy_demo, sim_of
from tests.rigs import run_cli as run

pytestmark = pytest.mark.usefixtures("cli_env")

REPO = Path(__file__).resolve().parents[2]

HOST = "hv-west-01"
HOST_KEY = "sites[1].hyperv_hosts[0]"  # hv-west-01 in config/demo.yaml




def line_of(config: Path, text: str) -> int:
    """The line of the first line of ``config`` holding ``text``."""
    return next(i for i, line in enumerate(config.read_text().splitlines(), start=1) if text in line)


def sites_of(config: Path) -> SimWorld:
    with connect(load_config(config)) as connection:
        return sim_of(connection)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = copy_demo(tmp_path / "site")
    assert run("validate", "--config", str(path)).exit_code == EXIT_OK  # seeds the simulated sites
    return path


def real_dns(secret_ref: str):
    """An edit of the demo config: its production DNS server over RFC 2136 with a TSIG key read
    from ``secret_ref`` (nothing listens on that port: the secret is checked first)."""

    def edit(data: dict[str, Any]) -> None:
        data["dns"]["servers"][0] = {"name": "dns-contoso", "kind": "rfc2136", "address": "127.0.0.1", "port": 9,
                                     "timeout_s": 1, "tsig": {"name": "agent-key", "secret": secret_ref}}

    return edit


# ----------------------------------------------------------------------------- validate --deep


def test_validate_deep_checks_every_endpoint_of_the_demo() -> None:
    result = run("validate", "--deep")
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout.startswith("config OK: ")
    assert ("preflight: all 17 checks passed in" in result.stdout
            and "(2 VMM servers, 4 Hyper-V hosts, 3 routers, 1 script host, 7 DNS zones)" in result.stdout)
    assert "checks passed" not in run("validate").stdout  # without --deep, as before


def test_an_unreachable_hyperv_host_is_named_with_its_config_line_and_exits_3(config: Path) -> None:
    sites = sites_of(config)
    sites.inject({"call": "hyperv.probe", "target": HOST, "fault": "transient"})
    before = sites.snapshot()
    result = run("validate", "--deep", "--config", str(config))
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert result.stdout == ""  # no "config OK"
    err = result.stderr
    assert "preflight: 1 of 17 checks failed" in err
    assert re.search(rf"demo\.yaml:{line_of(config, 'name: ' + HOST)}: {re.escape(HOST_KEY)}: "
                     rf"Hyper-V host {HOST} of site contoso-west: .*unreachable", err), err
    assert "try again when they answer" in err
    assert sites.snapshot() == before


def test_every_failure_is_reported_not_only_the_first(config: Path) -> None:
    sites = sites_of(config)
    sites.inject({"call": "hyperv.probe", "target": HOST, "fault": "transient"})
    sites.inject({"call": "routes.probe", "target": "rtr-branch", "fault": "permanent"})
    sites.inject({"call": "dns.probe", "target": "2.168.192.in-addr.arpa.", "fault": "timeout"})
    result = run("validate", "--deep", "--config", str(config))
    # A refusal that is not a mere timeout (the injected permanent fault) makes it exit 2.
    assert result.exit_code == EXIT_REFUSED, result.output
    err = result.stderr
    assert "3 problems in" in err and "preflight: 3 of 17 checks failed" in err
    assert f"{HOST_KEY}: Hyper-V host {HOST}" in err
    assert "third_sites[0].routers[0]: router rtr-branch of site contoso-branch: routes.probe on rtr-branch: refused" \
        in err
    assert "DNS server dns-contoso, zone 2.168.192.in-addr.arpa.: dns.probe on dns-contoso: no answer in time" in err
    assert "fix what each names" in err


def test_an_unset_secret_variable_is_named_with_its_config_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FA_TSIG_UNSET", raising=False)
    config = copy_demo(tmp_path / "site", edit=real_dns("env:FA_TSIG_UNSET"))
    result = run("validate", "--deep", "--config", str(config))
    assert result.exit_code == EXIT_REFUSED, result.output
    err = result.stderr
    line = line_of(config, "secret: env:FA_TSIG_UNSET")
    assert (f"demo.yaml:{line}: dns.servers[0].tsig.secret: the TSIG key 'agent-key' of DNS server dns-contoso "
            "(env:FA_TSIG_UNSET): environment variable FA_TSIG_UNSET is not set") in err
    # Its zones are not asked with a key that cannot be read: the one failure is the secret's.
    assert "1 problem in" in err and "DNS server dns-contoso, zone" not in err

    monkeypatch.setenv("FA_TSIG_UNSET", "  ")
    empty = run("validate", "--deep", "--config", str(config))
    assert empty.exit_code == EXIT_REFUSED and "environment variable FA_TSIG_UNSET is empty" in empty.stderr


def test_a_secret_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    config = copy_demo(tmp_path / "site", edit=real_dns(f"file:{tmp_path}/no-such-secret"))
    result = run("validate", "--deep", "--config", str(config))
    assert result.exit_code == EXIT_REFUSED, result.output
    assert f"dns.servers[0].tsig.secret: the TSIG key 'agent-key' of DNS server dns-contoso (file:{tmp_path}/" \
        "no-such-secret): cannot read secret file" in result.stderr


# ----------------------------------------------------------------------------- validate --json


def test_validate_json_is_one_document_that_matches_what_validate_says(config: Path) -> None:
    ok = run("validate", "--json", "--config", str(config))
    assert ok.exit_code == EXIT_OK, ok.output
    assert json.loads(ok.stdout) == {"ok": True, "config": str(config), "deep": False, "problems": [], "probes": []}

    deep = json.loads(run("validate", "--deep", "--json", "--config", str(config)).stdout)
    assert deep["ok"] is True and deep["problems"] == [] and len(deep["probes"]) == 17
    assert all(p["ok"] for p in deep["probes"])

    sites_of(config).inject({"call": "hyperv.probe", "target": HOST, "fault": "transient"})
    failed = run("validate", "--deep", "--json", "--config", str(config))
    assert failed.exit_code == EXIT_UNREACHABLE
    doc = json.loads(failed.stdout)  # stdout is the document and nothing else
    assert set(doc) == {"ok", "config", "deep", "problems", "probes"}
    assert doc["ok"] is False and doc["deep"] is True
    [problem] = doc["problems"]
    assert problem["file"] == str(config) and problem["key"] == HOST_KEY and problem["code"] == "unreachable"
    assert problem["line"] == line_of(config, "name: " + HOST)
    assert problem["message"].startswith(f"Hyper-V host {HOST} of site contoso-west: ")
    [probe] = [p for p in doc["probes"] if not p["ok"]]
    assert probe["target"] == f"Hyper-V host {HOST} of site contoso-west" and probe["key"] == HOST_KEY
    assert problem["message"] == f"{probe['target']}: {probe['detail']}"
    # The same problem, located the same way, as the human output gives it.
    human = run("validate", "--deep", "--config", str(config)).stderr
    assert f"{Path(problem['file']).name}:{problem['line']}: {problem['key']}: {problem['message']}" in human


def test_validate_json_locates_the_problems_of_a_bad_file(tmp_path: Path) -> None:
    from tests.rigs import config_fixture

    result = run("validate", "--json", "--config", str(config_fixture("unknown-key.yaml", tmp_path)))
    assert result.exit_code == EXIT_REFUSED
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["probes"] == []
    problems = [(p["line"], p["key"], p["code"]) for p in doc["problems"]]
    assert problems == [(9, "sites[1].hyperv_host", "invalid_config")]

    missing = run("validate", "--json", "--deep", "--config", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == EXIT_REFUSED and json.loads(missing.stdout)["problems"][0]["key"] == ""


def test_validate_json_reports_an_unreachable_endpoint_of_a_shallow_check(tmp_path: Path) -> None:
    config = copy_demo(tmp_path / "site", edit=real_dns("env:HOME"))
    result = run("validate", "--json", "--config", str(config))  # the plain reads meet nobody on port 9
    assert result.exit_code == EXIT_UNREACHABLE
    [problem] = json.loads(result.stdout)["problems"]
    assert problem["code"] == "unreachable" and "dns-contoso" in problem["message"]


# ---------------------------------------------------------------------------------------- run


def test_run_refuses_before_changing_anything_and_records_no_operation(config: Path) -> None:
    sites = sites_of(config)
    sites.inject({"call": "hyperv.probe", "target": HOST, "fault": "transient"})
    before, calls = sites.snapshot(), len(sites.calls())
    result = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "planned", "--yes")
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert f"{HOST_KEY}: Hyper-V host {HOST}" in result.stderr
    assert sites.snapshot() == before
    # Nothing but the probes reached the sites; no operation is in the store.
    assert {c.kind.rsplit(".", 1)[-1] for c in sites.calls()[calls:]} == {"probe"}
    listed = run("ops", "list", "--json", "--config", str(config))
    assert json.loads(listed.stdout) == []
    audit = run("ops", "audit", "--json", "--config", str(config))
    [entry] = [a for a in json.loads(audit.stdout) if a["action"] == "run.refused_by_preflight"]
    assert entry["details"]["kind"] == "planned_failover" and entry["details"]["problems"][0]["key"] == HOST_KEY

    as_json = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "test", "--json")
    assert as_json.exit_code == EXIT_UNREACHABLE
    error = json.loads(as_json.stdout)["error"]
    assert error["code"] == "preflight_unreachable" and error["category"] == "transient"
    assert error["problems"][0]["key"] == HOST_KEY
    assert sites.snapshot() == before


def test_run_says_what_preflight_checked_then_runs(config: Path) -> None:
    result = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "prepare")
    assert result.exit_code == EXIT_OK, result.output
    # Neither the test DNS server (3 zones) nor the script host: a prepare uses neither.
    assert "preflight: all 13 checks passed" in result.stdout
    assert result.stdout.index("preflight:") < result.stdout.index("reserving ahead for")


# ------------------------------------------------------------------------------ what is checked


def _targets(config: Path, kind: str | None) -> set[str]:
    loaded = load_config(config)
    with connect(loaded) as connection:
        report = preflight(loaded.config, connection.ports, kind=kind, plan=DEMO_PLAN)
    assert report.ok
    return {f.target for f in report.findings}


def test_what_is_checked_follows_the_operation(config: Path) -> None:
    everything = _targets(config, None)
    planned = _targets(config, "planned_failover")
    test = _targets(config, "test_failover")
    commit = _targets(config, "commit")
    drill = {t for t in everything if t.startswith("DNS server dns-drill")}
    production = {t for t in everything if t.startswith("DNS server dns-contoso")}
    routers = {t for t in everything if t.startswith("router ")}
    assert len(drill) == 3 and len(production) == 4 and len(routers) == 3
    assert planned == everything - drill
    assert test == everything - production
    assert commit == everything - drill - routers - {"script host hv-west-01"}
    assert _targets(config, "reverse") == commit - production


def test_an_unplanned_failover_goes_on_without_the_dark_site(config: Path) -> None:
    sites_of(config).inject({"call": "*.probe", "target": "*east*", "fault": "transient"})
    loaded = load_config(config)
    with connect(loaded) as connection:
        unplanned = preflight(loaded.config, connection.ports, kind="unplanned_failover", plan=DEMO_PLAN)
        planned = preflight(loaded.config, connection.ports, kind="planned_failover", plan=DEMO_PLAN)
    dark = {"VMM server of site contoso-east", "Hyper-V host hv-east-01 of site contoso-east",
            "Hyper-V host hv-east-02 of site contoso-east", "router rtr-east of site contoso-east"}
    assert unplanned.ok and {f.target for f in unplanned.warnings} == dark
    assert all("the site is dark" in f.detail for f in unplanned.warnings)
    assert not planned.ok and {f.target for f in planned.problems} == dark

    result = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "unplanned", "--yes")
    assert "warning: VMM server of site contoso-east: vmm.probe on contoso-east: unreachable" in result.stdout
    op = re.findall(r"op-[0-9a-f]{12}", result.stdout)[0]
    for _ in range(5):  # through its manual pauses
        if result.exit_code != EXIT_WAITING:
            break
        result = run("ops", "resume", op, "--config", str(config))
    assert result.exit_code == EXIT_OK, result.output

    # The commit works at the site the failover went to: the dark one is not even asked.
    sites = sites_of(config)
    calls = len(sites.calls())
    commit = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "commit", "--yes")
    assert commit.exit_code == EXIT_OK, commit.output
    assert "preflight: all 7 checks passed" in commit.stdout and "warning" not in commit.stdout
    probed = {c.target for c in sites.calls()[calls:] if c.kind.endswith(".probe")}
    assert probed and not {t for t in probed if "east" in t}


# ------------------------------------------------------------------------------------- timing


def test_probes_run_at_once_and_a_silent_endpoint_costs_the_deadline_only(config: Path) -> None:
    sites = sites_of(config)
    loaded = load_config(config)
    sites.set_latency("*.probe", fixed=0.3)
    with connect(loaded) as connection:
        t0 = time.monotonic()
        report = preflight(loaded.config, connection.ports)
        took = time.monotonic() - t0
    assert report.ok and len(report.findings) == 17
    assert took < 1.5, f"17 probes of 0.3 s each took {took:.2f} s: they did not run at once"

    sites.set_latency("hyperv.probe", fixed=5)
    with connect(loaded) as connection:
        t0 = time.monotonic()
        report = preflight(loaded.config, connection.ports, deadline_s=1.0)
        took = time.monotonic() - t0
    assert took < 2.0
    assert {f.target for f in report.problems} == {f.target for f in report.findings if f.kind == "hyperv"}
    assert report.only_unreachable and all(f.code == "timeout" and "1 s" in f.detail for f in report.problems)


def test_a_bug_in_a_probe_is_not_reported_as_a_finding(config: Path, monkeypatch) -> None:
    from agent.drivers.sim.vmm import SimVmm

    def broken(self: SimVmm) -> str:
        raise RuntimeError("driver bug")

    monkeypatch.setattr(SimVmm, "probe", broken)
    loaded = load_config(config)
    with connect(loaded) as connection, pytest.raises(RuntimeError, match="driver bug"):
        preflight(loaded.config, connection.ports)


# ------------------------------------------------------------------------ the probes themselves


def test_the_simulated_probes_refuse_what_the_site_does_not_have(world: SimWorld) -> None:
    before = world.snapshot()
    assert "answers" in world.vmm("site-a").probe()
    assert "hv-a1" in world.hyperv("site-a").probe("hv-a1")
    with pytest.raises(NotFoundError, match="no Hyper-V host hv-b1 at site-a"):
        world.hyperv("site-a").probe("hv-b1")
    assert "rtr-a" in world.routes().probe("rtr-a")
    with pytest.raises(NotFoundError, match="no router rtr-x"):
        world.routes().probe("rtr-x")
    assert "example.com." in world.dns("dns-main").probe("example.com")
    with pytest.raises(DnsNotAuthoritative):
        world.dns("dns-test").probe("2.168.192.in-addr.arpa")
    assert "hv-b1" in world.scripts().probe("hv-b1")
    with pytest.raises(NotFoundError):
        world.scripts().probe("hv-x")
    assert [c.kind for c in world.calls("*.probe")] == [
        "vmm.probe", "hyperv.probe", "hyperv.probe", "routes.probe", "routes.probe", "dns.probe", "dns.probe",
        "script.probe", "script.probe"]
    assert not any(c.changed for c in world.calls()) and world.snapshot() == before


def test_each_probe_goes_to_the_driver_of_its_host_or_router(world: SimWorld) -> None:
    hv = HyperVByHost("site-a", {"hv-a1": world.hyperv("site-a")})
    assert "hv-a1" in hv.probe("hv-a1")
    with pytest.raises(NotFoundError, match="hv-a2 is not configured"):
        hv.probe("hv-a2")
    routes = RoutesByRouter({"rtr-c": world.routes()})
    assert "rtr-c" in routes.probe("rtr-c")
    scripts = ScriptsByHost({"hv-b1": world.scripts()})
    assert "hv-b1" in scripts.probe("hv-b1")
    with pytest.raises(NotFoundError, match="no host hv-a1 to run scripts on"):
        scripts.probe("hv-a1")


def test_every_secret_the_site_template_names_is_checked() -> None:
    from agent.preflight import _secret_checks

    loaded = load_config(REPO / "config" / "site-template.yaml")
    everything, servers = _secret_checks(loaded.config, None)
    keys = {c.key for c in everything}
    assert {"sites[0].vmm.credential", "sites[0].hyperv_hosts[0].endpoint.credential",
            "dns.servers[0].tsig.secret"} <= keys
    assert not any(k.startswith("api.") for k in keys), "API tokens are hashes in the config, not secrets"
    assert any(k.startswith("sites[0].routers[") and k.endswith(".endpoint.credential") for k in keys)
    assert all("FAILOVER_AGENT" in c.target or "secrets" in c.target for c in everything)  # named by reference
    # Every DNS server that holds a zone, with the key of its TSIG secret.
    zoned = [(s.name, f"dns.servers[{i}].tsig.secret") for i, s in enumerate(loaded.config.dns.servers)
             if any(z.server == s.name for z in loaded.config.dns.zones)]
    assert [(s.name, key) for s, key in servers] == zoned and zoned


def test_a_vmm_credential_that_does_not_resolve_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FA_VMM_PASSWORD", raising=False)
    config = copy_demo(tmp_path / "site", edit=lambda d: d["sites"][0]["vmm"].update(credential="env:FA_VMM_PASSWORD"))
    result = run("validate", "--deep", "--config", str(config))
    assert result.exit_code == EXIT_REFUSED, result.output
    assert ("sites[0].vmm.credential: the credential of the VMM server of contoso-east (env:FA_VMM_PASSWORD): "
            "environment variable FA_VMM_PASSWORD is not set") in result.stderr


def test_the_signed_soa_probe_reports_what_the_server_answered(monkeypatch) -> None:
    import dns.rcode

    from agent.domain.errors import DnsServfail
    from agent.drivers.rfc2136 import Rfc2136Dns
    from tests.unit.test_dns_rfc2136 import SECRET, ZONE, FakeServer
    from tests.unit.test_dns_rfc2136 import config as dns_config

    monkeypatch.setenv("TEST_DNS_SECRET", SECRET)
    server = FakeServer()
    driver = Rfc2136Dns(dns_config(), [ZONE], session_factory=lambda: server)
    server.fail = [dns.rcode.SERVFAIL]
    with pytest.raises(DnsServfail, match="answered SERVFAIL to the signed SOA query for zone example.test."):
        driver.probe(ZONE)
    server.fail = [RuntimeError("a bug, not a DNS answer")]
    with pytest.raises(RuntimeError, match="a bug"):
        driver.probe(ZONE)
