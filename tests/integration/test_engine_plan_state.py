"""Every kind checks the plan's state first (issue 8, findings 1 and 4): a kind that does not apply
to where the VMs are is refused before anything is recorded or changed, naming the VMs, their
state and the command that would make it valid. The state itself is read back from the sites."""

from __future__ import annotations

import pytest

from agent.engine.model import OperationKind as K
from agent.engine.model import OpStatus
from agent.engine.planstate import MIXED, AlreadyFailedOver, KindNotValidNow, UncleanedTestFailover, VmState
from agent.errors import NotFoundError, RefusedError
from tests.rigs import DEMO_PLAN, Templates, changes, copy_demo

VMS = ["sql01", "app01", "app02", "web01"]
OK = (OpStatus.SUCCEEDED.value,)


def power(rig, site: str, vm: str) -> str:
    return next(v.power_state.value for v in rig.ports.vmm[site].read_inventory().vms if v.name == vm)


def refused_untouched(rig, kind: K, error: type[RefusedError], *fragments: str) -> RefusedError:
    """``kind`` is refused with ``error``: no operation recorded, no call changed a site."""
    ops, since = [o.id for o in rig.engine.operations()], len(rig.world.calls())
    with pytest.raises(error) as caught:
        rig.engine.create(kind, DEMO_PLAN)
    for fragment in fragments:
        assert fragment in caught.value.message, caught.value.message
    assert [o.id for o in rig.engine.operations()] == ops, "nothing recorded"
    assert changes(rig.world, since) == {}, "nothing changed at the sites"
    return caught.value


def test_a_planned_failover_during_a_test_failover_is_refused_and_production_keeps_running(new_rig) -> None:
    """Finding 1: main shut sql01 down, then failed with test_failover_running."""
    rig = new_rig()
    test = rig.start(K.TEST_FAILOVER)

    refused_untouched(rig, K.PLANNED_FAILOVER, UncleanedTestFailover, "sql01 (sql01 - Test)", test.id,
                      f"failover-agent run --plan {DEMO_PLAN} --kind cleanup")
    refused_untouched(rig, K.UNPLANNED_FAILOVER, UncleanedTestFailover, "kind cleanup")

    assert power(rig, "contoso-east", "sql01") == "Running"
    assert rig.start(K.CLEANUP_TEST).status in OK
    assert rig.start(K.PLANNED_FAILOVER).status in OK, "after the cleanup the failover runs"


def test_a_reverse_before_the_commit_is_refused_and_the_commit_still_runs(new_rig) -> None:
    """Finding 4: main created a failed reverse that then held the VMs the commit needs."""
    rig = new_rig()
    failover = rig.start(K.PLANNED_FAILOVER)

    error = refused_untouched(rig, K.REVERSE, KindNotValidNow, failover.id, "not committed",
                              f"failover-agent run --plan {DEMO_PLAN} --kind commit")
    assert error.code == "kind_not_valid_in_state"

    assert rig.start(K.COMMIT).status in OK
    assert rig.start(K.REVERSE).status in OK
    assert rig.engine.status(DEMO_PLAN).state == VmState.REVERSED


def test_the_follow_ups_of_a_failover_need_one_that_ended_well(new_rig) -> None:
    rig = new_rig()
    refused_untouched(rig, K.COMMIT, NotFoundError, "a failover comes first")
    view = rig.engine.start(K.PLANNED_FAILOVER, DEMO_PLAN)  # stops at its manual pause
    assert view.status == OpStatus.WAITING.value
    refused_untouched(rig, K.COMMIT, KindNotValidNow, "is waiting_for_manual_action",
                      f"failover-agent ops resume {view.id}")
    rig.engine.cancel(view.id, actor="alice")
    refused_untouched(rig, K.REVERSE, KindNotValidNow, "was cancelled")


@pytest.mark.parametrize(("before", "kind", "error", "says"), [
    ([], K.FAILBACK, KindNotValidNow, "othing to fail back: the VMs run at contoso-east"),
    ([K.PLANNED_FAILOVER], K.TEST_FAILOVER, AlreadyFailedOver, "failed over, awaiting commit"),
    ([K.PLANNED_FAILOVER], K.PREPARE, KindNotValidNow, "--kind commit"),
    ([K.PLANNED_FAILOVER], K.FAILBACK, AlreadyFailedOver, "--kind commit"),
    ([K.PLANNED_FAILOVER, K.COMMIT], K.PLANNED_FAILOVER, AlreadyFailedOver, "--kind reverse"),
    ([K.PLANNED_FAILOVER, K.COMMIT], K.FAILBACK, AlreadyFailedOver, "--kind reverse"),
    ([K.PLANNED_FAILOVER, K.COMMIT, K.REVERSE], K.PLANNED_FAILOVER, KindNotValidNow, "--kind failback"),
    ([K.PLANNED_FAILOVER, K.COMMIT, K.REVERSE], K.COMMIT, KindNotValidNow, "--kind failback"),
    ([K.TEST_FAILOVER], K.FAILBACK, UncleanedTestFailover, "--kind cleanup"),
], ids=lambda v: v.value if isinstance(v, K) else None)
def test_each_kind_is_refused_in_a_state_it_does_not_start_from(new_rig, before, kind, error, says) -> None:
    rig = new_rig()
    for k in before:
        assert rig.start(k).status in OK, k
    refused_untouched(rig, kind, error, f"plan {DEMO_PLAN}", says)


def test_the_state_follows_the_plan_through_its_life(new_rig) -> None:
    rig = new_rig()
    seen = [rig.engine.status(DEMO_PLAN).state]
    for kind in (K.PREPARE, K.TEST_FAILOVER, K.CLEANUP_TEST, K.PLANNED_FAILOVER, K.COMMIT, K.REVERSE, K.FAILBACK,
                 K.COMMIT, K.REVERSE):
        assert rig.start(kind).status in OK, kind
        seen.append(rig.engine.status(DEMO_PLAN).state)
    assert seen == ["protected", "prepared", "test_failover_running", "prepared", "failed_over", "committed",
                    "reversed", "failed_over", "committed", "prepared"]


def test_a_failover_stopped_half_way_is_mixed_and_names_the_vms(new_rig) -> None:
    rig = new_rig()
    view = rig.engine.start(K.PLANNED_FAILOVER, DEMO_PLAN)  # sql01 is over; the rest wait
    st = rig.engine.status(DEMO_PLAN)
    assert st.state == MIXED
    assert st.by_state() == {VmState.FAILED_OVER: ["sql01"], VmState.PROTECTED: ["app01", "app02", "web01"]}
    assert [u.id for u in st.unfinished] == [view.id]
    assert next(v for v in st.vms if v.vm == "sql01").running_at == ("contoso-west",)


def test_a_plan_preview_says_a_test_failover_is_running(new_rig) -> None:
    """Finding 4: the preview did not mention the test failover that would make the run fail."""
    rig = new_rig()
    test = rig.start(K.TEST_FAILOVER)
    plan = rig.engine.preview(K.PLANNED_FAILOVER, DEMO_PLAN)
    assert plan.notes[0].startswith("refused now: a planned failover of plan contoso-apps cannot start")
    assert test.id in plan.notes[0] and "--kind cleanup" in plan.notes[0]
    with pytest.raises(UncleanedTestFailover):
        rig.engine.preview(K.PLANNED_FAILOVER, DEMO_PLAN, strict=True)


def test_network_only_mode_follows_the_orchestrator_but_keeps_the_journals_order(new_rig, tmp_path) -> None:
    """There the orchestrator moves the VMs: VMs it failed over already are normal, a reverse
    before any failover is not."""
    def network_only(cfg) -> None:
        cfg["agent"]["mode"] = "network-only"

    rig = new_rig(templates=Templates.build(copy_demo(tmp_path / "network-only", edit=network_only)))
    for vm, host in (("sql01", "hv-east-01"), ("app01", "hv-east-01")):
        rig.ports.hyperv["contoso-east"].set_power(host, "stop", [vm])
        rig.ports.hyperv["contoso-east"].replicate(host, "prepare", [vm])
        rig.ports.hyperv["contoso-west"].replicate(host.replace("east", "west"), "failover", [vm])
    assert rig.engine.status(DEMO_PLAN).state == MIXED
    assert not any(n.startswith("refused now") for n in rig.engine.preview(K.PLANNED_FAILOVER, DEMO_PLAN).notes)
    refused_untouched(rig, K.REVERSE, NotFoundError, "a failover comes first")


def test_a_site_that_cannot_be_read_is_named_and_the_other_end_reports_the_vms(new_rig) -> None:
    rig = new_rig()
    assert rig.start(K.PLANNED_FAILOVER).status in OK
    rig.world.inject({"call": "vmm.read_inventory", "target": "contoso-east", "fault": "transient"})
    st = rig.engine.status(DEMO_PLAN)
    assert st.state == VmState.FAILED_OVER, "contoso-west reports every relationship"
    assert [s.split(":")[0] for s in st.stale] == ["contoso-east could not be read"]
    assert all(v.running_at == ("contoso-west",) for v in st.vms)
    assert rig.start(K.COMMIT).status in OK, "a commit needs only the recovery site"
