"""The planner core: runs every seam of planning in order, then refuses or builds the Plan.

The seams run in the order their decisions depend on each other (VMs, NICs, addresses, subnets).
Changes are read off only once no seam found a reason to refuse, so a refusal carries every
reason at once and no part of a refused plan is ever built.
"""

from __future__ import annotations

from agent.config import AgentConfig, RecoveryPlan, WholeSubnet
from agent.domain import validation as v
from agent.domain.model import Inventory
from agent.domain.plan import PLAN_KINDS, Plan, PlanKind, ttl_lowering
from agent.domain.planning.addresses import AddressPlanning
from agent.domain.planning.dns import DnsPlanning
from agent.domain.planning.index import InventoryIndex
from agent.domain.planning.routes import RoutePlanning
from agent.domain.planning.spelling import in_inventory_spelling
from agent.domain.planning.testnets import TestNetworkPlanning
from agent.domain.planning.vms import VmResolution
from agent.domain.validation import PlanRefused
from agent.gcpause import gc_paused


def build_plan(config: AgentConfig, inventory: Inventory, plan_name: str, kind: PlanKind,
               recovery_point: str | None = None) -> Plan:
    """The Plan for a ``kind`` failover of recovery plan ``plan_name``, each VM to the recovery
    point ``recovery_point`` names (None: the recovery plan's ``recovery_point``).

    Raises :class:`~agent.domain.validation.PlanRefused` (code ``plan_refused``) carrying every
    reason the plan cannot run; nothing has changed anywhere when it does.
    """
    if kind not in PLAN_KINDS:
        raise ValueError(f"unknown plan kind {kind!r}; expected one of {PLAN_KINDS}")
    with gc_paused():
        return Planner(in_inventory_spelling(config, inventory), InventoryIndex(inventory), plan_name,
                       kind).build(recovery_point)


class Planner(VmResolution, AddressPlanning, TestNetworkPlanning, RoutePlanning, DnsPlanning):
    def build(self, recovery_point: str | None = None) -> Plan:
        recovery_plan = self._recovery_plan()
        self.plan_name = recovery_plan.name  # as the config spells it: --plan matches case-insensitively
        self.resolve_vms(recovery_plan)
        point = recovery_point or recovery_plan.recovery_point
        self.resolve_points(point)
        for vm in self.vms:
            for pos, nic in enumerate(vm.primary.nics):
                work = self.plan_nic(vm, pos, nic)
                if work is not None and self.test:
                    self.plan_test_nic(work)
        slots = [s for vm in self.vms for n in vm.nics for s in n.slots]
        self.allocate_failover(slots)
        if self.test:
            self.allocate_test(slots)
        self.refuse_unused_overrides(slots)
        moved: list[WholeSubnet] = []
        if not self.test and not self._mixed:
            moved = self.check_subnets(slots)
        self.check_host_names()
        refusals = self.refusals.build()
        if refusals:
            raise PlanRefused.of(refusals, plan=self.plan_name, kind=self.kind)

        if self.test:
            self.test_changes()
        else:
            self.failover_changes()
            self.route_changes(moved)
        self.dns_changes()
        plan = Plan(
            plan=self.plan_name,
            kind=self.kind,
            source_site=self.source_site,
            target_site=self.target_site,
            vms=tuple(vm.planned for vm in self.vms),
            changes=Plan.sort_changes(self.changes),
            notes=tuple(self.notes.build()),
            excluded=tuple(self.excluded),
            recovery_point=point,
        )
        return self._with_ttl_note(plan)

    def _recovery_plan(self) -> RecoveryPlan:
        recovery_plan = self.config.plan(self.plan_name)
        if recovery_plan is None:
            known = [p.name for p in self.config.recovery_plans]
            raise PlanRefused.of([v.unknown_plan(self.plan_name, known)], plan=self.plan_name, kind=self.kind)
        return recovery_plan

    def _with_ttl_note(self, plan: Plan) -> Plan:
        """A planned failover that lowers TTLs first says so, and how long it will wait."""
        ttl = self.config.dns.ttl
        if self.kind != "planned" or not ttl.lower_before_planned:
            return plan
        lowered, wait_s = ttl_lowering(plan, ttl.failover_ttl)
        if not lowered:
            return plan
        return Plan(plan=plan.plan, kind=plan.kind, source_site=plan.source_site,
                    target_site=plan.target_site, vms=plan.vms, changes=plan.changes,
                    excluded=plan.excluded, recovery_point=plan.recovery_point,
                    notes=(*plan.notes,
                           f"before failover: the TTL of {len(lowered)} DNS records drops to "
                           f"{ttl.failover_ttl} s, then the failover waits {wait_s} s "
                           f"(the longest old TTL) so no resolver still caches an old address"))
