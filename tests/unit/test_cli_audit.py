"""'failover-agent ops audit' and the script output of 'ops show', read as a site admin would after
a planned failover of the demo and its commit: every change to the simulated sites and every
operator action is there, with what was there before and after."""

from __future__ import annotations

import json
import re

import pytest

from agent.cli import EXIT_OK, EXIT_WAITING
from agent.configfile import DEMO_PLAN
from tests.rigs import run_cli as run

pytestmark = pytest.mark.usefixtures("cli_env")

ROW = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s")




def entries(text: str) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """(action, target) -> (result, the lines below the row) of 'ops audit' output."""
    found: dict[tuple[str, str], tuple[str, list[str]]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if ROW.match(line):
            _, _, _, action, _, target, *result = line.split()
            current = []
            found.setdefault((action, target), (" ".join(result), current))
        elif line.startswith("    "):
            current.append(line.strip())
    return found


@pytest.fixture
def failed_over_and_committed() -> str:
    started = run("run", "--plan", DEMO_PLAN, "--kind", "planned", "--yes")
    assert started.exit_code == EXIT_WAITING, started.output
    op = re.search(r"op-[0-9a-f]{12}", started.stdout).group(0)
    assert run("ops", "resume", op).exit_code == EXIT_OK
    assert run("run", "--plan", DEMO_PLAN, "--kind", "commit", "--yes").exit_code == EXIT_OK
    return op


def test_ops_audit_shows_every_change_with_before_and_after(failed_over_and_committed: str) -> None:
    op = failed_over_and_committed
    shown = run("ops", "audit", "--limit", "1000")
    assert shown.exit_code == EXIT_OK, shown.output
    audit = entries(shown.stdout)

    def change(action: str, target: str) -> tuple[str, str, str]:
        result, lines = audit[(action, target)]
        before = next(x for x in lines if x.startswith("before:")).removeprefix("before:").strip()
        after = next(x for x in lines if x.startswith("after:")).removeprefix("after:").strip()
        return result, before, after

    assert change("routes.withdraw", "rtr-east/192.168.1.0/24") == ("changed", "via 10.10.0.1 metric 256", "absent")
    assert change("routes.announce", "rtr-west/192.168.1.0/24") == ("changed", "absent", "via 10.20.0.1 metric 256")
    assert change("hyperv.set_failover_configs", "contoso-west/hv-west-02/web01/nic0") == (
        "changed", "none", "192.168.1.30/24 gw 192.168.1.1 dns 192.168.1.5")
    assert change("hyperv.set_power.stop", "contoso-east/hv-east-01/sql01") == ("changed", "Running", "Off")
    assert change("hyperv.set_power.start", "contoso-west/hv-west-01/sql01") == ("changed", "Off", "Running")
    assert change("hyperv.replicate.prepare", "contoso-east/hv-east-01/sql01") == (
        "changed", "Replicating", "PreparedForFailover")
    assert change("hyperv.replicate.failover", "contoso-west/hv-west-01/sql01") == (
        "changed", "PreparedForFailover", "FailedOverWaitingCompletion"), "what the prepare step left"
    assert change("hyperv.replicate.complete", "contoso-west/hv-west-01/sql01") == (
        "changed", "FailedOverWaitingCompletion", "FailedOver")
    assert change("vmm.grant_ips", "contoso-west/west-core-pool/192.168.1.20") == (
        "changed", "free", "address 192.168.1.20, granted_to sql01/nic0")
    assert change("dns.apply", "dns-contoso/app01.corp.contoso.example./A")[1:] == (
        "192.168.2.10 (TTL 3600)", "172.16.1.10 (TTL 60)")
    script_result, script = audit[("script.run_script", r"hv-west-01:C:\DR\Test-AppHealth.ps1")]
    assert script_result == "succeeded"
    assert r"hv-west-01:C:\DR\Test-AppHealth.ps1 succeeded in 0.0s" in script
    assert "Url = http://app01.corp.contoso.example/health" in script, "what the script printed"
    # Operator actions, with who did them.
    assert audit[("operation.confirmed", DEMO_PLAN)][1] == ["by: --yes", "checksum: not pinned"]
    assert ("operation.resume", "-") in audit and ("operation.manual_step_done", "-") in audit

    trail = json.loads(run("ops", "audit", op, "--json", "--limit", "1000").stdout)
    moved = [t for t in trail if t["action"] == "routes.announce"]
    assert [t["details"]["result"] for t in moved] == ["changed", "changed"]
    assert all(t["operation"] == op and t["details"]["step"].startswith("web/routes-announce/") for t in moved)


def test_ops_show_shows_what_a_script_printed(failed_over_and_committed: str) -> None:
    shown = run("ops", "show", failed_over_and_committed)
    assert shown.exit_code == EXIT_OK, shown.output
    text = shown.stdout
    assert "script output (1 run)" in text
    block = text[text.index("script output"):text.index("notes (")]
    assert "applications/after/0/script:" in block
    assert r"hv-west-01:C:\DR\Test-AppHealth.ps1 succeeded" in block
    assert "parameters: Url=http://app01.corp.contoso.example/health" in block
    assert "stdout:\n" in block and "Url = http://app01.corp.contoso.example/health" in block
    assert "stderr: (nothing)" in block
    as_json = json.loads(run("ops", "show", failed_over_and_committed, "--json").stdout)
    [kept] = as_json["scripts"]
    assert kept["step"] == "applications/after/0/script" and kept["succeeded"] is True


def test_a_cut_script_output_and_an_unfinished_change_say_so() -> None:
    from agent.cli.trail import audit_lines, script_lines

    lines = script_lines({"host": "hv-1", "path": "x.ps1", "succeeded": False, "error": "exit 1", "duration_s": 2,
                          "stdout": "a\nb\n", "stdout_truncated": {"kept_bytes": 65536, "total_bytes": 70000},
                          "stderr": ""})
    assert lines == ["hv-1:x.ps1 failed in 2.0s: exit 1",
                     "stdout: (truncated: the first 65536 of 70000 bytes are kept)", "  a", "  b",
                     "stderr: (nothing)"]
    result, below = audit_lines({"step": "g/start/hv-1", "before": None, "after": "Running", "result": "pending"})
    assert result == "pending"
    assert below[:3] == ["step g/start/hv-1", "before: (not read by the step)", "after:  Running"]
    assert "resuming the operation completes this entry" in below[3]
    assert audit_lines({"text": "checked", "n": 2}) == ("", ["n: 2", "text: checked"])
    assert audit_lines(None) == ("", [])
