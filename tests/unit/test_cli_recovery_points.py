"""The recovery point from the command line: 'plan --recovery-point' shows each VM's point (text
and JSON, its checksum pinning it), 'run --recovery-point' fails over to it, 'run --kind
change_recovery_point' changes it before the commit, and a point a replica lacks exits 2 naming
the VM and the points it has, with nothing changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.cli.app import EXIT_OK, EXIT_REFUSED
from tests.integration.test_recovery_points import inventory_with_points
from tests.rigs import DEMO_PLAN, copy_demo, run_cli

pytestmark = pytest.mark.usefixtures("cli_env")


def no_pauses(data: dict[str, Any]) -> None:
    for group in data["recovery_plans"][0]["groups"]:
        group.pop("after", None)


@pytest.fixture
def config(tmp_path: Path) -> str:
    return str(copy_demo(tmp_path / "cfg", edit=no_pauses, inventory=inventory_with_points()))


def test_plan_shows_the_point_and_run_fails_over_to_it_then_changes_it(config: str) -> None:
    text = run_cli("plan", "--plan", DEMO_PLAN, "--kind", "unplanned", "--recovery-point", "before-patch",
                   "--config", config)
    assert text.exit_code == EXIT_OK, text.output
    assert "recovery point: before-patch" in text.stdout
    assert "    recovery point before-patch (taken 2026-12-03T05:00:00+00:00, application-consistent)" in text.stdout
    shown = run_cli("plan", "--plan", DEMO_PLAN, "--kind", "unplanned", "--recovery-point", "before-patch",
                    "--json", "--config", config)
    doc = json.loads(shown.stdout)
    assert doc["recovery_point"] == "before-patch"
    assert {v["recovery_point"] for v in doc["vms"]} == {"before-patch"}
    latest = json.loads(run_cli("plan", "--plan", DEMO_PLAN, "--kind", "unplanned", "--json",
                                "--config", config).stdout)
    assert latest["checksum"] != doc["checksum"] and latest["recovery_point"] == "latest"

    ran = run_cli("run", "--plan", DEMO_PLAN, "--kind", "unplanned", "--recovery-point", "before-patch",
                  "--yes", "--checksum", doc["checksum"], "--json", "--config", config)
    assert ran.exit_code == EXIT_OK, ran.output
    assert json.loads(ran.stdout)["status"] == "succeeded"

    change = run_cli("plan", "--plan", DEMO_PLAN, "--kind", "change-recovery-point", "--recovery-point",
                     "latest_app_consistent", "--config", config)
    assert change.exit_code == EXIT_OK, change.output
    assert "change recovery point of plan contoso-apps: brings the VMs of" in change.stdout
    assert "stop-failover" in change.stdout
    changed = run_cli("run", "--plan", DEMO_PLAN, "--kind", "change_recovery_point", "--recovery-point",
                      "latest_app_consistent", "--yes", "--json", "--config", config)
    assert changed.exit_code == EXIT_OK, changed.output
    assert json.loads(changed.stdout)["kind"] == "change_recovery_point"
    back = run_cli("run", "--plan", DEMO_PLAN, "--kind", "change-point", "--recovery-point", "latest", "--yes",
                   "--config", config)
    assert back.exit_code == EXIT_OK, back.output
    assert "make it final" in back.output and "--kind commit" in back.output


def test_a_point_a_replica_lacks_exits_2_naming_it(config: str) -> None:
    result = run_cli("run", "--plan", DEMO_PLAN, "--kind", "planned", "--recovery-point", "after-patch",
                     "--yes", "--config", config)
    assert result.exit_code == EXIT_REFUSED, result.output
    assert "recovery_point_not_found" in result.output and "sql01" in result.output
    assert "before-patch" in result.output  # the points it has
    ops = run_cli("ops", "list", "--json", "--config", config)
    assert json.loads(ops.stdout) == []


def test_a_prepare_takes_no_point(config: str) -> None:
    result = run_cli("run", "--plan", DEMO_PLAN, "--kind", "prepare", "--recovery-point", "before-patch",
                     "--yes", "--config", config)
    assert result.exit_code == EXIT_REFUSED, result.output
    assert "not for a prepare" in result.output
