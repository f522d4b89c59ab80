"""The periodic preflight on the demo sites: silent while everything would work, and naming what
would fail -- an exhausted pool, a reservation someone removed in VMM, a DNS record changed
behind the agent's back -- without recording an operation or changing anything. Run by the
scheduler, its report is kept in the store and handed to whoever listens for problems."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from agent.domain.model import RecordType
from agent.engine.model import OperationKind, OpStatus
from agent.ports import GrantRequest
from agent.preflight_job import (
    DNS_RECORD_CHANGED,
    RESERVATION_DIFFERS,
    RESERVATION_MISSING,
    RESERVATION_UNRECORDED,
    PreflightReport,
    latest_report,
    run_and_record,
    run_preflight,
)
from agent.scheduler import Scheduler
from tests.rigs import DEMO_PLAN, Rig

WEST = "contoso-west"


def _unchanged_by(rig: Rig, check: Any) -> PreflightReport:
    """``check(rig.engine)``, asserting it recorded no operation and changed nothing at the sites."""
    ops, calls = len(rig.engine.operations(limit=10_000)), len(rig.world.calls())
    report: PreflightReport = check(rig.engine)
    assert len(rig.engine.operations(limit=10_000)) == ops, "no operation recorded"
    assert [c.kind for c in rig.world.calls()[calls:] if c.changed] == [], "nothing changed at the sites"
    return report


def _codes(report: PreflightReport) -> list[str]:
    return [p.code for p in report.problems]


def test_a_fresh_demo_and_each_stage_of_its_life_has_no_problem(new_rig) -> None:
    rig = new_rig()
    assert _unchanged_by(rig, run_preflight).problems == ()
    drill = rig.engine.start(OperationKind.TEST_FAILOVER, DEMO_PLAN)  # waits at its pause, DNS written
    assert drill.status == OpStatus.WAITING.value
    assert _unchanged_by(rig, run_preflight).problems == ()
    rig.through_pauses(drill)
    rig.start(OperationKind.CLEANUP_TEST)
    rig.start(OperationKind.PREPARE)
    report = _unchanged_by(rig, run_preflight)
    assert (report.ok, report.plans, report.problems) == (True, (DEMO_PLAN,), ())


def test_an_exhausted_pool_is_reported_naming_it(new_rig) -> None:
    rig = new_rig()
    vmm = rig.ports.vmm[WEST]  # the site itself, behind the agent's back
    inventory = vmm.read_inventory()
    [pool] = [p for p in inventory.pools if p.vm_network == "west-apps"]
    owner = next(nic.id for vm in inventory.vms for nic in vm.nics if nic.id)
    for _ in range(1000):  # someone else takes every free address of the pool
        [granted] = vmm.grant_ips([GrantRequest(pool=pool.name, address="", owner_id=owner,
                                                description="another team's servers")])
        if granted.error is not None:
            assert granted.error.code == "pool_exhausted"
            break
    else:
        pytest.fail("the pool never ran out")

    report = _unchanged_by(rig, run_preflight)
    exhausted = [p for p in report.problems if p.code == "pool_exhausted"]
    assert exhausted and {p.plan for p in exhausted} == {DEMO_PLAN}
    assert OperationKind.PLANNED_FAILOVER.value in {p.kind for p in exhausted}
    for p in exhausted:
        assert pool.name in p.message and p.where == f"{WEST}/{pool.name}"


def test_a_reservation_removed_or_taken_over_in_vmm_is_reported(new_rig) -> None:
    rig = new_rig()
    assert rig.start(OperationKind.PREPARE).status == OpStatus.SUCCEEDED.value
    held = rig.engine.journal.reservations(held=True)
    assert len(held) >= 2
    vmm = rig.ports.vmm[WEST]
    grants = {(g.pool, g.address): g for g in vmm.read_inventory().grants}
    gone, taken = held[0], held[1]
    [revoked] = vmm.revoke_ips([grants[(gone.pool, gone.address)]])
    assert revoked.changed
    vmm.revoke_ips([grants[(taken.pool, taken.address)]])
    other = next(r.owner_id for r in held if r.owner_id != taken.owner_id)
    [regranted] = vmm.grant_ips([GrantRequest(pool=taken.pool, address=taken.address, owner_id=other,
                                              description="by hand")])
    assert regranted.ok

    report = _unchanged_by(rig, run_preflight)
    drift = {p.code: p for p in report.problems if p.code.startswith("reservation_")}
    assert set(drift) == {RESERVATION_MISSING, RESERVATION_DIFFERS}
    missing, differs = drift[RESERVATION_MISSING], drift[RESERVATION_DIFFERS]
    assert missing.where == f"{WEST}/{gone.pool}/{gone.address}" and missing.plan == DEMO_PLAN
    assert f"{gone.vm}/{gone.nic}" in missing.message and "no longer in VMM" in missing.message
    assert differs.where == f"{WEST}/{taken.pool}/{taken.address}" and other in differs.message


def test_a_grant_with_the_agents_marker_the_journal_does_not_hold_is_reported(new_rig) -> None:
    rig = new_rig()
    rig.start(OperationKind.PREPARE)
    [row] = rig.engine.journal.reservations(held=True)[:1]
    rig.engine.journal.release_reservation(site=row.site, pool=row.pool, address=row.address)  # journal lost it

    report = _unchanged_by(rig, run_preflight)
    [problem] = report.problems
    assert (problem.code, problem.where, problem.plan) == (
        RESERVATION_UNRECORDED, f"{WEST}/{row.pool}/{row.address}", DEMO_PLAN)


def test_a_dns_record_changed_behind_the_agents_back_is_reported(new_rig) -> None:
    rig = new_rig()
    failover = rig.start(OperationKind.PLANNED_FAILOVER)
    assert failover.status == OpStatus.SUCCEEDED.value
    assert _unchanged_by(rig, run_preflight).problems == ()
    dns = rig.ports.dns["dns-contoso"]
    zone, name = "corp.contoso.example.", "app01.corp.contoso.example."
    [record] = dns.read(zone, [(name, RecordType.A)])
    from agent.domain.model import RecordChange

    dns.apply(zone, [RecordChange(zone=zone, name=name, type=RecordType.A, ttl=300,
                                  expected=tuple(record.values), new_values=("10.99.99.99",))])

    report = _unchanged_by(rig, run_preflight)
    [problem] = report.problems
    assert (problem.code, problem.plan, problem.kind, problem.where) == (
        DNS_RECORD_CHANGED, DEMO_PLAN, OperationKind.PLANNED_FAILOVER.value, f"dns-contoso/{name}/A")
    assert "10.99.99.99" in problem.message and record.values[0] in problem.message


def test_the_report_is_kept_and_problems_are_handed_on(new_rig) -> None:
    rig = new_rig()
    assert latest_report(rig.store) is None
    heard: list[PreflightReport] = []
    first = run_and_record(rig.engine, on_problems=heard.append)
    assert first.ok and heard == []
    assert latest_report(rig.store) == first

    rig.start(OperationKind.PREPARE)
    [row] = rig.engine.journal.reservations(held=True)[:1]
    vmm = rig.ports.vmm[WEST]
    vmm.revoke_ips([g for g in vmm.read_inventory().grants if (g.pool, g.address) == (row.pool, row.address)])
    second = run_and_record(rig.engine, on_problems=heard.append)
    assert heard == [second] and _codes(second) == [RESERVATION_MISSING]
    kept = latest_report(rig.store)
    assert kept == second and kept.to_dict()["problems"][0]["where"] == f"{WEST}/{row.pool}/{row.address}"


def test_the_scheduler_runs_the_preflight_every_interval_and_off_means_off(new_rig) -> None:
    rig = new_rig()
    rig.start(OperationKind.PREPARE)
    [row] = rig.engine.journal.reservations(held=True)[:1]
    vmm = rig.ports.vmm[WEST]
    vmm.revoke_ips([g for g in vmm.read_inventory().grants if (g.pool, g.address) == (row.pool, row.address)])

    heard: list[PreflightReport] = []
    scheduler = Scheduler(rig.store)
    rig.engine.scheduler = scheduler
    scheduler.schedule_preflight(timedelta(seconds=1), on_problems=heard.append)
    scheduler.start(rig.engine)
    try:
        deadline = time.monotonic() + 20
        while len(heard) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(heard) >= 2, "ran at start and again an interval later"
        assert all(_codes(r) == [RESERVATION_MISSING] for r in heard)
        assert scheduler.due() == [], "the preflight is not an expiry"
        scheduler.schedule_preflight(timedelta(0), on_problems=heard.append)
        time.sleep(0.3)  # a run already under way ends
        runs = len(heard)
        time.sleep(1.5)
        assert len(heard) == runs, "0 switched it off"
    finally:
        scheduler.shutdown()
    assert latest_report(rig.store) == heard[-1]


def test_a_site_or_dns_server_that_does_not_answer_is_a_problem_not_a_crash(new_rig) -> None:
    rig = new_rig()
    rig.start(OperationKind.PLANNED_FAILOVER)  # DNS written at dns-contoso
    rig.world.inject({"call": "vmm.read_inventory", "target": WEST, "fault": "transient"})
    rig.world.inject({"call": "dns.read", "target": "dns-contoso", "fault": "transient"})

    report = _unchanged_by(rig, run_preflight)
    where = {(p.code, p.where) for p in report.problems}
    assert ("unreachable", WEST) in where, report.problems  # the reservations could not be checked
    assert any(c == "unreachable" and w.startswith("dns-contoso/") for c, w in where)
    assert all(p.code == "unreachable" for p in report.problems)


def test_a_planning_error_that_is_not_a_refusal_is_reported_with_its_code(new_rig) -> None:
    rig = new_rig()
    # The plan state reads no failover configuration; the planner does, and trips.
    rig.world.inject({"call": "hyperv.get_failover_configs", "fault": "transient"})
    report = _unchanged_by(rig, run_preflight)
    assert report.problems and {p.plan for p in report.problems} == {DEMO_PLAN}
    assert sorted(p.kind for p in report.problems) == [OperationKind.PLANNED_FAILOVER.value,
                                                       OperationKind.TEST_FAILOVER.value], report.problems
    assert all(p.code == "unreachable" and "get_failover_configs" in p.message for p in report.problems)


def test_the_scheduled_job_without_an_engine_or_with_a_store_error_does_not_raise(new_rig, monkeypatch) -> None:
    import agent.preflight_job as job
    import agent.scheduler as scheduler_module
    from agent.errors import TransientError

    scheduler_module.run_preflight_job()  # no engine in this process: logged, nothing else
    rig = new_rig()

    def down(_engine: Any, **_kwargs: Any) -> PreflightReport:
        raise TransientError("the store is down")

    monkeypatch.setattr(scheduler_module, "_ENGINE", rig.engine)
    monkeypatch.setattr(job, "run_and_record", down)
    scheduler_module.run_preflight_job()  # logged; the next run tries again
    assert latest_report(rig.store) is None


def test_the_work_of_an_operation_under_way_is_not_drift(new_rig) -> None:
    rig = new_rig()
    prepare = rig.start(OperationKind.PREPARE)
    [row] = rig.engine.journal.reservations(held=True)[:1]
    vmm = rig.ports.vmm[WEST]
    vmm.revoke_ips([g for g in vmm.read_inventory().grants if (g.pool, g.address) == (row.pool, row.address)])
    rig.engine.journal.set_status(prepare.id, OpStatus.RUNNING)  # as if another agent ran it now
    assert [p for p in run_preflight(rig.engine).problems if p.code.startswith("reservation_")] == []
    rig.engine.journal.set_status(prepare.id, OpStatus.SUCCEEDED)
    assert _codes(run_preflight(rig.engine)) == [RESERVATION_MISSING]
    assert _codes(run_and_record(rig.engine)) == [RESERVATION_MISSING]  # nobody listening: still kept
    assert _codes(latest_report(rig.store)) == [RESERVATION_MISSING]


def test_a_record_holding_data_the_agent_does_not_manage_is_reported_before_the_failover_is_refused(
        new_rig) -> None:
    from agent.domain.model import RecordChange

    rig = new_rig()
    dns = rig.ports.dns["dns-contoso"]
    zone, name = "corp.contoso.example.", "app01.corp.contoso.example."
    [record] = dns.read(zone, [(name, RecordType.A)])
    dns.apply(zone, [RecordChange(zone=zone, name=name, type=RecordType.A, ttl=record.ttl,
                                  expected=tuple(record.values), new_values=(*record.values, "10.5.5.5"))])

    report = _unchanged_by(rig, run_preflight)
    [problem] = report.problems
    assert (problem.code, problem.plan, problem.kind) == (
        "dns_record_not_managed", DEMO_PLAN, OperationKind.PLANNED_FAILOVER.value)
    assert name in problem.message and "10.5.5.5" in problem.message
