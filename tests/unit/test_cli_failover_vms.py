"""What an operator sees when a failover meets VMs that are not where the plan expects them: a
network-only resume before the orchestrator failed the VMs over, a cancel after a failover stopped
half-way, and a VM whose state cannot be read while planning."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import EXIT_WAITING
from agent.configfile import DEMO_PLAN
from tests.unit.test_cli_ops import _nobody_at_a_terminal, demo_copy, op_id_in, run, world

pytestmark = pytest.mark.usefixtures("cli_env", "_nobody_at_a_terminal")
__all__ = ["_nobody_at_a_terminal"]


def network_only(tmp_path: Path) -> Path:
    return demo_copy(tmp_path, lambda d: d["agent"].update(mode="network-only"))


def test_network_only_resume_before_the_vms_failed_over_waits_again_with_exit_4(tmp_path: Path) -> None:
    config = network_only(tmp_path)
    paused = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "planned", "--yes")
    assert paused.exit_code == EXIT_WAITING, paused.output
    op = op_id_in(paused.stdout)
    before = world(config).snapshot()

    resumed = run("ops", "resume", "--config", str(config), op)

    assert resumed.exit_code == EXIT_WAITING, resumed.output
    assert "reading replication again before anything moves" in resumed.stdout
    assert "marking the manual step done" not in resumed.stdout
    assert "(not yet: sql01 Replicating)" in resumed.stdout
    after = world(config).snapshot()
    assert after["routes"] == before["routes"] and after["record_sets"] == before["record_sets"]
    shown = run("ops", "show", "--config", str(config), op)
    assert "waiting" in shown.stdout and "not yet: sql01 Replicating" in shown.stdout
