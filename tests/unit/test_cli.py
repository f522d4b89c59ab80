"""The failover-agent command line, run as a site admin would: exit codes, reports, JSON, logs."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from agent import __version__
from agent.cli import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, exit_code_for
from agent.config import SecretRef
from agent.configfile import DEMO_PLAN, ENV_CONFIG, ENV_DATA_DIR
from agent.errors import ConflictError, NotFoundError, RefusedError, TimeoutError_, UnreachableError
from agent.logging import configure_logging, get_logger
from tests.rigs import config_fixture
from tests.rigs import run_cli as run

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "config"


pytestmark = pytest.mark.usefixtures("cli_env")



def demo_copy(tmp_path: Path, edit=None) -> Path:
    """The demo config as an ordinary file (not the shipped demo), optionally edited."""
    data = yaml.safe_load((REPO / "config" / "demo.yaml").read_text(encoding="utf-8"))
    data["agent"]["data_dir"] = str(tmp_path / "var")
    if edit:
        edit(data)
    shutil.copy(REPO / "config" / "demo-inventory.yaml", tmp_path)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- basics


def test_version_and_help_speak_to_a_site_admin() -> None:
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"failover-agent {__version__}"
    result = run("--help")
    assert result.exit_code == 0
    for words in ("failover-agent demo", "Exit codes", "0 done", "1 the operation failed", "2 bad config", "3 a VMM"):
        assert words in " ".join(result.stdout.split()), words
    for command in ("validate", "plan", "demo", "config"):
        assert command in result.stdout


def test_a_usage_error_exits_2() -> None:
    result = run("plan", "--plan", DEMO_PLAN, "--kind", "sideways")
    assert result.exit_code == EXIT_REFUSED


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (RefusedError("no"), EXIT_REFUSED),
        (UnreachableError("down"), EXIT_UNREACHABLE),
        (TimeoutError_("slow"), EXIT_UNREACHABLE),
        (NotFoundError("gone"), EXIT_FAILED),
        (ConflictError("taken"), EXIT_FAILED),
        (RuntimeError("bug"), EXIT_FAILED),
    ],
)
def test_exit_codes_follow_what_the_caller_does_next(error: BaseException, code: int) -> None:
    assert exit_code_for(error) == code


# --------------------------------------------------------------------------- validate


def test_the_demo_validates() -> None:
    result = run("validate")
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout.startswith("config OK: ")
    assert "from the shipped demo" in result.stdout
    assert "contoso-apps (4 VMs in 3 groups)" in result.stdout
    assert "4 replicated VMs" in result.stdout


def test_the_config_can_come_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_CONFIG, str(demo_copy(tmp_path)))
    result = run("validate")
    assert result.exit_code == EXIT_OK, result.output
    assert "from $FAILOVER_AGENT_CONFIG" in result.stdout


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("unknown-key.yaml", [":9: sites[1].hyperv_host: unknown key"]),
        (
            "plaintext-password.yaml",
            [":12: sites[0].vmm.credential: secrets must be references", ":21: dns.servers[0].tsig.secret: secrets"],
        ),
        (
            "several-problems.yaml",
            [
                ":4: agent.mode:",
                ":14: sites[1].dns_servers[0]: no dns.servers entry named 'dns-contso'",
                ":19: network_mappings[0].tset_network: unknown key",
                ":24: subnets[0].announcements.contoso-west[0].router: unknown router 'rtr-wst'",
                ":37: recovery_plans[0].groups[0].after[0].script.timeout_s:",
            ],
        ),
        (
            "missing-network.yaml",
            [":11: network_mappings[0].target.vm_network: VM network 'west-nowhere' does not exist at site"],
        ),
        (
            "overlapping-pools.yaml",
            [
                "overlapping-pools-inventory.yaml:14: sites[0].vm_networks[0].subnets[0].pools[1].range: "
                "pool east-core-extra (192.168.1.150-192.168.1.250) overlaps pool east-core-pool"
            ],
        ),
    ],
)
def test_bad_configs_give_located_problems_and_exit_2(name: str, expected: list[str], tmp_path: Path) -> None:
    result = run("validate", "--config", str(config_fixture(name, tmp_path)))
    assert result.exit_code == EXIT_REFUSED, result.output
    assert result.stdout == ""
    lines = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert len(lines) == len(expected), result.stderr
    for line, want in zip(lines, expected, strict=True):
        assert want in line, f"{want!r} not in {line!r}"
    assert re.match(rf"{len(expected)} problems? in ", result.stderr)
    assert "Winter2024!" not in result.output and "c3VwZXItc2VjcmV0LXRzaWcta2V5" not in result.output


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run("validate", "--config", str(tmp_path / "nope.yaml"))
    assert result.exit_code == EXIT_REFUSED
    assert "cannot read" in result.stderr


def test_drivers_of_a_later_version_are_refused_by_config_key(tmp_path: Path) -> None:
    def bgp_branch(data: dict) -> None:  # a BGP speaker "over" the simulator: no such driver
        data["third_sites"][0]["routers"][0] = {"name": "rtr-branch", "kind": "bgp"}
        data["subnets"][0]["third_site_routes"] = []

    result = run("validate", "--config", str(demo_copy(tmp_path, bgp_branch)))
    assert result.exit_code == EXIT_REFUSED, result.output
    err = result.stderr
    assert "the file itself is valid" in err
    assert "third_sites[0].routers[0].kind: router kind 'bgp' over transport 'sim' is not available yet" in err
    assert len([line for line in err.splitlines() if "not available yet" in line]) == 1  # the rest has drivers


# ------------------------------------------------------------------------------- plan


def summary_counts(text: str) -> dict[str, int]:
    last = text.strip().splitlines()[-1]
    return {k: int(v) for k, v in re.findall(r"([a-z-]+)=(\d+)", last)}


@pytest.mark.parametrize("kind", ["planned", "unplanned", "test"])
def test_plan_json_parses_and_matches_the_diff(kind: str) -> None:
    diff = run("plan", "--plan", DEMO_PLAN, "--kind", kind)
    assert diff.exit_code == EXIT_OK, diff.output
    as_json = run("plan", "--plan", DEMO_PLAN, "--kind", kind, "--json")
    assert as_json.exit_code == EXIT_OK, as_json.output
    doc = json.loads(as_json.stdout)  # stdout holds the JSON and nothing else
    assert doc["kind"] == kind and doc["plan"] == DEMO_PLAN
    counts = summary_counts(diff.stdout)
    assert counts.pop("vms") == len(doc["vms"]) == 4
    for key, value in counts.items():
        assert doc["counts"][key] == value, key
    assert doc["summary"] == diff.stdout.strip().splitlines()[-1]
    assert f"checksum {doc['checksum']}" in diff.stdout
    assert sum(doc["counts"].values()) > 0


def test_the_planned_diff_reads_like_a_change_list() -> None:
    out = run("plan", "--plan", DEMO_PLAN, "--kind", "planned").stdout
    assert "group 1 'databases'" in out and "group 3 'web'" in out
    assert "192.168.1.21" in out  # sql01's secondary IP configuration
    assert "changed from 192.168.2.10" in out  # the application network changes subnet
    assert "withdraw on rtr-east" in out and "announce on rtr-west" in out and "rtr-branch" in out
    assert "dns A app01.corp.contoso.example." in out and "dns PTR" in out
    # The DHCP NIC is connected but gets no reservation and no failover IP.
    assert "connect replica nic1 to network west-mgmt" in out
    assert not re.search(r"(reserve|failover IP of) .*nic1", out)


def test_the_test_diff_stays_off_production() -> None:
    out = run("plan", "--plan", DEMO_PLAN, "--kind", "test").stdout
    assert "create west-apps-test-contoso-apps" in out  # WNV: networks created for the test
    assert "network west-drill" in out  # VLAN: the existing isolated network
    assert "on dns-contoso" not in out and "on dns-drill (test DNS)" in out
    assert "withdraw" not in out and "failover IP" not in out


def test_a_refused_plan_lists_every_reason_and_exits_2(tmp_path: Path) -> None:
    def leave_web01_behind(data: dict) -> None:
        data["recovery_plans"][0]["groups"].pop()  # web01 shares 192.168.1.0/24 with sql01
        data["recovery_plans"][0]["groups"][0]["vms"].append("ghost01")

    config = demo_copy(tmp_path, leave_web01_behind)
    result = run("plan", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "planned")
    assert result.exit_code == EXIT_REFUSED, result.output
    assert result.stdout == ""
    assert "refused:" in result.stderr
    assert "[partial_subnet_failover]" in result.stderr and "web01" in result.stderr
    assert "[vm_not_found]" in result.stderr and "ghost01" in result.stderr
    assert "Nothing was changed" in result.stderr

    as_json = run("plan", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "planned", "--json")
    assert as_json.exit_code == EXIT_REFUSED
    error = json.loads(as_json.stdout)["error"]
    assert error["code"] == "plan_refused"
    assert {"partial_subnet_failover", "vm_not_found"} <= {r["code"] for r in error["reasons"]}


def test_an_unknown_plan_is_refused() -> None:
    result = run("plan", "--plan", "no-such-plan", "--kind", "test")
    assert result.exit_code == EXIT_REFUSED
    assert "no-such-plan" in result.stderr and "contoso-apps" in result.stderr


# ----------------------------------------------------------------------- config schema


def test_config_schema_is_a_valid_json_schema_that_accepts_the_shipped_configs() -> None:
    result = run("config", "schema")
    assert result.exit_code == EXIT_OK
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in ("demo.yaml", "site-template.yaml"):
        data = yaml.safe_load((REPO / "config" / name).read_text(encoding="utf-8"))
        # YAML reads ISO durations and paths as strings, as an editor sees them.
        errors = [e.message for e in validator.iter_errors(data)]
        assert errors == [], (name, errors)
    bad = yaml.safe_load((FIXTURES / "unknown-key.yaml").read_text(encoding="utf-8"))
    assert not validator.is_valid(bad)


def test_config_template_prints_the_site_template() -> None:
    result = run("config", "template")
    assert result.exit_code == EXIT_OK
    assert result.stdout == (REPO / "config" / "site-template.yaml").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------- demo


def test_demo_validates_and_previews_every_kind(tmp_path: Path) -> None:
    result = run("demo")
    assert result.exit_code == EXIT_OK, result.output
    out = result.stdout
    assert "config OK" in out
    for kind in ("planned", "unplanned", "test"):
        article = "an" if kind == "unplanned" else "a"
        assert f"Preview {article} {kind} failover of recovery plan {DEMO_PLAN}" in out
        assert f"{kind} failover of plan {DEMO_PLAN}: contoso-east -> contoso-west vms=4" in out
    assert (tmp_path / "data").is_dir()  # the per-user data dir, not the package directory
    again = run("demo", "--reset")
    assert again.exit_code == EXIT_OK, again.output


# ------------------------------------------------------------------------ secrets, logs


SECRET = "c2VjcmV0LXZhbHVlLW5ldmVyLXByaW50ZWQ="


def test_an_unreachable_dns_server_exits_3_and_no_secret_leaks(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FA_TEST_TSIG", SECRET)
    port = free_port()

    def real_dns(data: dict) -> None:
        data["dns"]["servers"][0] = {
            "name": "dns-contoso", "kind": "rfc2136", "address": "127.0.0.1", "port": port, "timeout_s": 2,
            "tsig": {"name": "failover-agent.", "secret": "env:FA_TEST_TSIG"},
        }

    config = demo_copy(tmp_path, real_dns)
    result = run("--log-level", "debug", "validate", "--config", str(config))
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert "unreachable:" in result.stderr
    assert SECRET not in result.output


def test_logs_redact_secret_refs_and_secret_keys(monkeypatch) -> None:
    monkeypatch.setenv("FA_TEST_PASSWORD", "hunter2-very-secret")
    stream = io.StringIO()
    configure_logging("debug", json=True, stream=stream)
    ref = SecretRef("env:FA_TEST_PASSWORD")
    log = get_logger("test")
    log.info("connecting", credential=ref, password=ref.reveal(), nested={"api_token": "tok-123", "host": "vmm01"})
    logging.getLogger("pypsrp").warning("auth header %s", "x", extra={})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    text = stream.getvalue()
    assert "hunter2-very-secret" not in text and "tok-123" not in text
    first = lines[0]
    assert first["credential"] == "***" and first["password"] == "***"
    assert first["nested"] == {"api_token": "***", "host": "vmm01"}
    assert first["event"] == "connecting" and first["level"] == "info"
    assert lines[1]["logger"] == "pypsrp"  # stdlib loggers go through the same pipeline


def test_logs_are_json_when_stderr_is_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    get_logger("t").info("hello", site="contoso-west")
    assert json.loads(stream.getvalue())["site"] == "contoso-west"


def test_no_print_outside_the_cli() -> None:
    offenders = []
    for path in (REPO / "agent").rglob("*.py"):
        if "cli" in path.relative_to(REPO / "agent").parts[:1]:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if re.match(r"\s*print\(", line):
                offenders.append(f"{path.relative_to(REPO)}:{n}")
    assert offenders == []


def test_the_console_entry_point_runs_as_a_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_CONFIG}
    env.update({ENV_DATA_DIR: str(tmp_path / "data"), "PYTHONPATH": str(REPO), "FAILOVER_AGENT_LOG_LEVEL": "debug"})
    done = subprocess.run(
        [sys.executable, "-m", "agent", "plan", "--plan", DEMO_PLAN, "--kind", "planned", "--json"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kind"] == "planned"
    # Debug logs went to stderr, as JSON lines (stderr is a pipe, not a terminal).
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert logged and all("event" in entry for entry in logged)
