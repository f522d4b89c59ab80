"""An interactive ``run`` reads the sites once: the operation is planned from the read its review
showed the operator (``Engine.review`` -> ``Engine.create(reading=...)``), never from a read nobody
reviewed, and only while that read is recent; the plan built from it is still held to the
reviewed checksum."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from agent.cli import EXIT_WAITING, session
from agent.config import AgentConfig
from agent.configfile import load_config
from agent.domain.planning import build_plan
from agent.drivers.sim import SimWorld
from agent.engine.journal import Journal
from agent.engine.model import OperationKind
from agent.engine.reading import REVIEW_REUSE_S
from agent.engine.service import PlanChanged
from agent.engine.store import Store
from agent.inventory import gather_inventory
from agent.ports import Ports
from agent.wiring import connect
from tests.rigs import DEMO_PLAN, Rig, run_cli, sim_of

READS = ("vmm.read_inventory", "hyperv.get_replications", "hyperv.get_failover_configs", "dns.read",
         "routes.read_routes")


def reads(rig: Rig, since: int = 0) -> Counter[tuple[str, str]]:
    return Counter((c.kind, c.target) for c in rig.world.calls()[since:] if c.kind in READS)


def one_read(config: AgentConfig, ports: Ports, world: SimWorld) -> Counter[tuple[str, str]]:
    """The calls of reading both sites once (a DNS server is read once per zone)."""
    mark = len(world.calls())
    gather_inventory(config, ports, dns_purpose="production")
    return Counter((c.kind, c.target) for c in world.calls()[mark:] if c.kind in READS)


def test_an_interactive_run_reads_each_site_host_zone_and_router_once(
        cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "is_interactive", lambda: True)
    result = run_cli("run", "--plan", DEMO_PLAN, "--kind", "planned", input="y\nn\n")  # go; not done at the pause
    assert result.exit_code == EXIT_WAITING, result.output
    assert "Run this planned failover of contoso-apps now" in result.stdout

    loaded = load_config(None)
    store = Store.for_path(cli_env / "agent.sqlite")
    try:
        [op] = Journal(store).operations()
    finally:
        store.close()
    with connect(loaded) as connection:
        calls = sim_of(connection).calls()
        once = one_read(loaded.config, connection.ports, sim_of(connection))
    created = op.created_at.timestamp()
    before = Counter((c.kind, c.target) for c in calls if c.kind in READS and c.started < created)
    assert {kind for kind, _ in once} == set(READS)
    assert before == once, "each endpoint read once before the operation was recorded"


def test_create_plans_from_the_reviewed_read_and_still_checks_its_checksum(new_rig: Callable[..., Rig]) -> None:
    rig = new_rig()
    plan, reading = rig.engine.review(OperationKind.PLANNED_FAILOVER, DEMO_PLAN, strict=True)
    assert reads(rig) == one_read(rig.config, rig.ports, rig.world)

    with pytest.raises(PlanChanged):  # the plan built from the reused read is held to the checksum
        rig.engine.create(OperationKind.PLANNED_FAILOVER, DEMO_PLAN, expect_checksum="sha256:0000",
                          reading=reading)
    mark = len(rig.world.calls())
    op_id = rig.engine.create(OperationKind.PLANNED_FAILOVER, DEMO_PLAN, expect_checksum=plan.checksum(),
                              reading=reading)
    assert reads(rig, mark) == Counter(), "nothing read again"
    assert rig.engine.journal.operation(op_id).plan_checksum == plan.checksum()


@pytest.mark.parametrize("why", ["too old", "no checksum", "another plan kind"])
def test_a_read_that_is_old_or_was_not_reviewed_for_this_operation_is_read_again(
        new_rig: Callable[..., Rig], why: str) -> None:
    rig = new_rig()
    plan, reading = rig.engine.review(OperationKind.PLANNED_FAILOVER, DEMO_PLAN, strict=True)
    kind, expect = OperationKind.PLANNED_FAILOVER, plan.checksum()
    if why == "too old":
        reading = replace(reading, began=reading.began - REVIEW_REUSE_S - 1)
    elif why == "no checksum":
        expect = None
    else:  # what a planned failover's review read is not what an unplanned failover reads
        assert reading.inventory is not None
        kind = OperationKind.UNPLANNED_FAILOVER
        expect = build_plan(rig.config, reading.inventory, DEMO_PLAN, "unplanned").checksum()
    mark = len(rig.world.calls())
    rig.engine.create(kind, DEMO_PLAN, expect_checksum=expect, reading=reading)
    assert reads(rig, mark) == one_read(rig.config, rig.ports, rig.world)


def test_a_commit_checks_the_plan_state_against_the_review_read(new_rig: Callable[..., Rig]) -> None:
    rig = new_rig()
    rig.start(OperationKind.PLANNED_FAILOVER)
    plan, reading = rig.engine.review(OperationKind.COMMIT, DEMO_PLAN, strict=True)
    assert reading.states is not None
    mark = len(rig.world.calls())
    rig.engine.create(OperationKind.COMMIT, DEMO_PLAN, expect_checksum=plan.checksum(), reading=reading)
    assert reads(rig, mark) == Counter()
