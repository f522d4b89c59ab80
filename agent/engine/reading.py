"""Once per run: the read a review planned from, reused by the ``create`` that follows it.

An interactive ``run`` shows the operator the plan, asks, then records the operation. Reading
both sites again for the record would double the time before anything happens (every Hyper-V
host, DNS zone and router, twice) and could plan from something the operator never saw. So
:meth:`~agent.engine.service.Engine.review` hands back what it read, and ``create`` plans from
that -- only for the operation reviewed, only with the checksum reviewed (which the plan built
from it must still have), and only while the read is recent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from agent.domain.model import Inventory
from agent.engine.model import OperationKind
from agent.inventory import VmStates

log = structlog.get_logger("agent.engine")

REVIEW_REUSE_S = 300.0
"""How old (from when it began) a review's read may be for ``create`` to plan from it. An operator
who takes longer to confirm gets the sites read again, and the checksum then says whether the plan
is still the one reviewed."""


@dataclass(frozen=True)
class Reading:
    """What a review read of the sites, for ``create`` to plan the reviewed operation from."""

    kind: OperationKind
    plan_name: str
    began: float
    """``time.monotonic()`` when the read began."""
    inventory: Inventory | None = None
    """A failover's or a prepare's: both sites, whole."""
    states: VmStates | None = None
    """A follow-up's: the VMs and replications its plan state was confirmed against."""


def reviewed_reading(kind: OperationKind, plan_name: str | None, reading: Reading | None,
                     expect_checksum: str | None) -> tuple[Inventory | None, VmStates | None]:
    """What of ``reading`` ``create`` may plan from (None: read again): a review's of this very
    operation, pinned to the checksum reviewed, and younger than :data:`REVIEW_REUSE_S`. A read
    nobody reviewed (no checksum to hold the plan to) is never reused."""
    if reading is None or expect_checksum is None or (reading.kind, reading.plan_name) != (kind, plan_name):
        return None, None
    age = time.monotonic() - reading.began
    if age > REVIEW_REUSE_S:
        log.info("the review read the sites too long ago: reading them again", plan=plan_name,
                 age_s=round(age), bound_s=REVIEW_REUSE_S)
        return None, None
    return reading.inventory, reading.states
