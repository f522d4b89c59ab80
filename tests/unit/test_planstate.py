"""The state of a recovery plan as a pure function of journal rows and site reads, and the gate
every kind passes (``agent.engine.planstate``), without sites: each Hyper-V Replica state, the
journal's part, and what each kind is refused in (with the command that would make it valid)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.domain.model import PowerState, Replication, ReplicationState, VirtualMachine
from agent.engine.model import OperationKind as K
from agent.engine.model import StepSpec
from agent.engine.planstate import (
    MIXED,
    PREPARED,
    AlreadyFailedOver,
    KindNotValidNow,
    UncleanedTestFailover,
    VmState,
    derive,
    kinds_allowed,
    refusal,
    vm_status,
    vms_through,
)
from agent.engine.steps import HostVmItem, PowerArgs
from agent.engine.store import OperationRow, ReservationRow

EAST, WEST = "contoso-east", "contoso-west"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PLAN = "apps"


def rep(vm: str, state: ReplicationState = ReplicationState.REPLICATING, *, primary: str = EAST,
        test_vm: str | None = None) -> Replication:
    replica = WEST if primary == EAST else EAST
    return Replication(vm=vm, primary_site=primary, primary_host="h1", replica_site=replica, replica_host="h2",
                       state=state, test_vm=test_vm)


def machine(vm: str, site: str, power: PowerState = PowerState.RUNNING, role: str = "primary") -> VirtualMachine:
    return VirtualMachine(name=vm, site=site, host="h", role=role, power_state=power)  # type: ignore[arg-type]


def op(i: int, kind: K, status: str = "succeeded", parent: str | None = None) -> OperationRow:
    return OperationRow(id=f"op-{i:012d}", kind=kind.value, plan_name=PLAN, status=status, parent_id=parent,
                        created_at=T0 + timedelta(minutes=i), finished_at=T0 + timedelta(minutes=i, seconds=30))


def state(reps, *, ops=(), held=(), machines=(), vms=("a", "b")):
    return derive(plan=PLAN, vms=list(vms), sites=(EAST, WEST), operations=list(ops), reservations=list(held),
                  replications=list(reps), machines=list(machines))


@pytest.mark.parametrize(("replication", "expected"), [
    (rep("a"), VmState.PROTECTED),
    (rep("a", primary=WEST), VmState.REVERSED),
    (rep("a", test_vm="a - Test"), VmState.TEST_FAILOVER),
    (rep("a", ReplicationState.PREPARED_FOR_FAILOVER), VmState.FAILOVER_STARTED),
    (rep("a", ReplicationState.FAILED_OVER_WAITING_COMPLETION), VmState.FAILED_OVER),
    (rep("a", ReplicationState.FAILED_OVER), VmState.COMMITTED),
    (None, VmState.UNKNOWN),
])
def test_each_replication_state_is_a_vm_state(replication, expected) -> None:
    assert vm_status("a", replication, EAST, []).state == expected


def test_a_vm_runs_where_it_is_powered_on_and_its_test_vm_does_not_count() -> None:
    machines = [machine("a", EAST, PowerState.OFF), machine("a", WEST, PowerState.OFF, "replica"),
                machine("a", WEST, role="test")]
    down = vm_status("a", rep("a", ReplicationState.FAILED_OVER_WAITING_COMPLETION), EAST, machines)
    assert down.running_at == () and down.off_everywhere
    assert not vm_status("a", None, EAST, machines).off_everywhere, "unread is not known to be down"
    replica_off = [machine("a", WEST, PowerState.OFF, "replica")]
    assert not vm_status("a", rep("a"), EAST, replica_off, (EAST,)).off_everywhere, "the primary was not read"
    assert vm_status("a", rep("a"), EAST, [machine("a", EAST)]).running_at == (EAST,)


def test_the_plan_is_mixed_naming_the_vms_that_differ() -> None:
    st = state([rep("a", ReplicationState.FAILED_OVER_WAITING_COMPLETION), rep("b")])
    assert st.state == MIXED
    assert st.by_state() == {VmState.FAILED_OVER: ["a"], VmState.PROTECTED: ["b"]}
    assert st.to_json()["vms"][0]["state"] == "failed_over"


def test_prepared_means_addresses_held_at_the_recovery_site_by_a_prepare() -> None:
    prepare = op(1, K.PREPARE)
    held = ReservationRow(vm="a", nic="nic0", site=WEST, pool="p", address="10.0.0.5", purpose="failover",
                          operation_id=prepare.id, held=True)
    assert state([rep("a"), rep("b")], ops=[prepare], held=[held]).state == PREPARED
    assert state([rep("a"), rep("b")], ops=[prepare]).state == VmState.PROTECTED
    st = state([rep("a"), rep("b")], ops=[prepare], held=[held])
    assert st.to_json()["reservations"] == [{"vm": "a", "nic": "nic0", "site": WEST, "pool": "p",
                                             "address": "10.0.0.5", "purpose": "failover", "operation": prepare.id}]


def test_the_journal_names_the_test_the_failover_and_its_commit() -> None:
    drill, redrill = op(1, K.TEST_FAILOVER), op(3, K.TEST_FAILOVER, "failed")
    failover = op(4, K.PLANNED_FAILOVER)
    commit = op(5, K.COMMIT, parent=failover.id)
    running = state([rep("a", test_vm="a - Test"), rep("b", test_vm="b - Test")], ops=[drill, redrill])
    assert running.test_failover is not None and running.test_failover.id == redrill.id
    assert running.last_test is not None and running.last_test.id == drill.id
    done = state([rep("a", ReplicationState.FAILED_OVER)] * 2, ops=[drill, failover, commit])
    assert done.test_failover is None
    assert (done.failover.id, done.committed_by.id) == (failover.id, commit.id)  # type: ignore[union-attr]


def test_a_planned_failover_during_a_test_is_refused_naming_the_cleanup() -> None:
    st = state([rep("a", test_vm="a - Test"), rep("b")], ops=[op(1, K.TEST_FAILOVER, "waiting_for_manual_action")])
    error = refusal(K.PLANNED_FAILOVER, st, full_mode=True)
    assert isinstance(error, UncleanedTestFailover)
    assert "a (a - Test): test failover running (op-000000000001, since 2026-12-01 09:01:00 UTC)" in error.message
    assert error.message.endswith(f"Clean the test failover up first: failover-agent run --plan {PLAN} --kind cleanup")
    assert error.fields["vms"] == ["a"]
    assert refusal(K.PLANNED_FAILOVER, st, full_mode=False) is None, "network-only: the orchestrator's business"


def test_a_failover_stopped_half_way_names_resume_and_cancel() -> None:
    failover = op(1, K.PLANNED_FAILOVER, "failed")
    st = state([rep("a", ReplicationState.PREPARED_FOR_FAILOVER), rep("b")], ops=[failover])
    error = refusal(K.UNPLANNED_FAILOVER, st, full_mode=True)
    assert isinstance(error, KindNotValidNow)
    assert f"failover-agent ops resume {failover.id} (or failover-agent ops cancel {failover.id})" in error.message


def test_a_commit_applies_to_the_vms_that_got_over() -> None:
    """An unplanned failover carries on past a VM that failed: the others are committed."""
    failover = op(1, K.UNPLANNED_FAILOVER, "partially_succeeded")
    st = state([rep("a", ReplicationState.FAILED_OVER_WAITING_COMPLETION), rep("b")], ops=[failover])
    assert refusal(K.COMMIT, st, full_mode=True) is None
    assert kinds_allowed(st, full_mode=True) == ["commit"]


def test_a_reverse_needs_every_vm_committed() -> None:
    failover = op(1, K.PLANNED_FAILOVER)
    commit = op(2, K.COMMIT, parent=failover.id)
    st = state([rep("a", ReplicationState.FAILED_OVER), rep("b", ReplicationState.FAILED_OVER_WAITING_COMPLETION)],
               ops=[failover, commit])
    error = refusal(K.REVERSE, st, full_mode=True)
    assert isinstance(error, KindNotValidNow) and "b: failed over, awaiting commit" in error.message
    assert refusal(K.REVERSE, st, full_mode=False) is None, "network-only: the journal's order holds"


def test_moving_vms_that_are_over_already_is_refused_as_such() -> None:
    st = state([rep("a", ReplicationState.FAILED_OVER)] * 2)
    for kind in (K.TEST_FAILOVER, K.PLANNED_FAILOVER, K.UNPLANNED_FAILOVER, K.FAILBACK):
        error = refusal(kind, st, full_mode=True)
        assert isinstance(error, AlreadyFailedOver) and "--kind reverse" in error.message, kind
    assert isinstance(refusal(K.PREPARE, st, full_mode=True), KindNotValidNow)


def test_unread_vms_do_not_block_a_failover() -> None:
    """A site gone dark reports nothing: the planner decides from what was last read."""
    st = state([])
    assert {v.state for v in st.vms} == {VmState.UNKNOWN}
    assert refusal(K.UNPLANNED_FAILOVER, st, full_mode=True) is None


def test_what_can_run_now() -> None:
    assert kinds_allowed(state([rep("a"), rep("b")]), full_mode=True) == [
        "prepare", "test_failover", "planned_failover", "unplanned_failover"]
    reversed_ = state([rep("a", primary=WEST), rep("b", primary=WEST)])
    assert kinds_allowed(reversed_, full_mode=True) == ["prepare", "test_failover", "unplanned_failover",
                                                        "failback"]
    waiting = op(1, K.TEST_FAILOVER, "waiting_for_manual_action")
    drill = state([rep("a", test_vm="a - Test"), rep("b")], ops=[waiting])
    assert kinds_allowed(drill, full_mode=True) == ["cleanup_test"]
    busy = state([rep("a", test_vm="a - Test"), rep("b")], ops=[op(1, K.TEST_FAILOVER, "running")])
    assert kinds_allowed(busy, full_mode=True) == []


def test_a_vm_is_done_when_every_step_that_holds_it_succeeded() -> None:
    def args(*vms: str) -> PowerArgs:
        return PowerArgs(site=WEST, host="h", power="start",
                         items=tuple(HostVmItem(key=vm, vm=vm, target_vm=vm) for vm in vms))

    steps = [args("a", "b"), args("a"), args("b")]
    specs = [StepSpec(name=f"s{i}", action="x", stage=i, target="h", args=a) for i, a in enumerate(steps)]
    assert vms_through(specs, ["succeeded", "succeeded", "pending"]) == ["a"]
    assert vms_through(specs, ["succeeded", "failed", "succeeded"]) == ["b"]
