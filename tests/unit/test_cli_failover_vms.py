"""What an operator sees when a failover meets VMs that are not where the plan expects them: a
network-only resume before the orchestrator failed the VMs over, a cancel after a failover stopped
half-way, and a VM whose state cannot be read while planning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_WAITING
from agent.configfile import DEMO_PLAN
from tests.rigs import run_cli as run
from tests.unit.test_cli_ops import demo_copy, op_id_in, world

pytestmark = pytest.mark.usefixtures("cli_env")


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


def test_cancelling_a_failover_that_failed_half_way_puts_the_vm_back_and_suggests_nothing_false(
        tmp_path: Path) -> None:
    config = demo_copy(tmp_path, lambda d: None)
    assert run("validate", "--config", str(config)).exit_code == EXIT_OK
    before = world(config).snapshot()
    world(config).inject({"call": "hyperv.replicate.failover", "target": "sql01", "fault": "permanent"})
    failed = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "planned", "--yes")
    assert failed.exit_code == EXIT_FAILED, failed.output
    op = op_id_in(failed.stdout)
    assert world(config).snapshot()["vms"]["contoso-east"]["sql01"]["power"] == "Off"

    cancelled = run("ops", "cancel", "--config", str(config), op, "--yes")

    assert cancelled.exit_code == EXIT_OK, cancelled.output
    assert f"cancelled: planned_failover {op}" in cancelled.stdout
    assert ": succeeded" in cancelled.stdout and "ops resume" not in cancelled.stdout
    after = world(config).snapshot()
    assert after["vms"]["contoso-east"]["sql01"]["power"] == "Running"
    assert after["replications"] == before["replications"]


def test_a_cancel_that_cannot_put_a_vm_back_says_so_and_cancelling_again_finishes(tmp_path: Path) -> None:
    config = demo_copy(tmp_path, lambda d: d.setdefault("policies", {}).update(retry={"attempts": 1}))
    assert run("validate", "--config", str(config)).exit_code == EXIT_OK
    paused = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "planned", "--yes")
    assert paused.exit_code == EXIT_WAITING, paused.output
    op = op_id_in(paused.stdout)
    host = world(config).snapshot()["vms"]["contoso-east"]["sql01"]["host"]
    world(config).inject({"call": "hyperv.*", "target": host, "fault": "transient"})

    first = run("ops", "cancel", "--config", str(config), op, "--yes")

    assert first.exit_code == EXIT_FAILED, first.output
    out = " ".join(first.stdout.split())
    assert "not put back as they were: sql01" in out
    assert f"ops cancel {op} --config {config} undoes the rest" in out and "ops resume" not in out
    assert world(config).snapshot()["vms"]["contoso-west"]["sql01"]["power"] == "Running", "kept running"
    undo = [o["id"] for o in json.loads(run("ops", "list", "--config", str(config), "--json").stdout)
            if o["kind"] == "cancel"]
    resumed = run("ops", "resume", "--config", str(config), undo[0])
    assert resumed.exit_code == EXIT_REFUSED
    assert f"ops cancel {op} --config {config} undoes what it left" in " ".join(resumed.stderr.split())

    world(config).clear_faults()
    second = run("ops", "cancel", "--config", str(config), op, "--yes")

    assert second.exit_code == EXIT_OK, second.output
    after = world(config).snapshot()
    assert after["vms"]["contoso-east"]["sql01"]["power"] == "Running"
    assert after["vms"]["contoso-west"]["sql01"]["power"] == "Off"
    third = run("ops", "cancel", "--config", str(config), op, "--yes")
    assert third.exit_code == EXIT_REFUSED and "already cancelled" in third.stderr


def test_an_unreadable_vm_is_named_left_out_of_an_unplanned_failover_and_stops_a_planned_one(
        tmp_path: Path) -> None:
    config = demo_copy(tmp_path, lambda d: None)
    assert run("validate", "--config", str(config)).exit_code == EXIT_OK
    world(config).inject({"call": "hyperv.get_replications", "target": "web01", "fault": "permanent"})

    planned = run("plan", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "planned")
    assert planned.exit_code == EXIT_REFUSED, planned.output
    assert "[vm_state_unreadable] VM web01: its Hyper-V state cannot be read" in " ".join(planned.output.split())

    preview = run("plan", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "unplanned")
    assert preview.exit_code == EXIT_OK, preview.output
    assert "VM web01 is left out: its Hyper-V state cannot be read" in " ".join(preview.stdout.split())

    ran = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "unplanned", "--yes")
    assert ran.exit_code == EXIT_WAITING, ran.output  # the demo's manual step after the databases
    assert "was left out of this failover, nothing was done for it" in " ".join(ran.stdout.split())
    ended = run("ops", "resume", "--config", str(config), op_id_in(ran.stdout))
    assert ended.exit_code == EXIT_FAILED, ended.output
    assert "VMs that failed: web01" in " ".join(ended.stdout.split())
    after = world(config).snapshot()
    assert after["replications"]["web01"]["state"] == "Replicating"
    assert after["replications"]["sql01"]["state"] == "FailedOverWaitingCompletion"
