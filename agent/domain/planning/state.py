"""The planner's state, shared by the mixin of every seam of planning.

Kept in one base class so each seam reads and fills it with types the checker sees: what was
asked, what the inventory and config hold, and what has been decided and refused so far.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable

from agent.config import AddressOverride, AgentConfig
from agent.domain import validation as v
from agent.domain.plan import Change, CreateTestNetwork, PlanKind
from agent.domain.planning.index import InventoryIndex
from agent.domain.planning.pools import TargetPools
from agent.domain.planning.work import Collector, MappingUse, TestTarget, VmWork
from agent.domain.validation import Refusal


class PlannerState:
    config: AgentConfig
    idx: InventoryIndex
    plan_name: str
    kind: PlanKind
    test: bool
    refusals: Collector[Refusal]
    notes: Collector[str]
    changes: list[Change]
    """In any order: the Plan sorts them."""
    vms: list[VmWork]
    excluded: list[tuple[str, str]]
    """(VM, why): plan VMs whose state is unreadable: left out of an unplanned failover (any
    other kind is refused)."""
    source_site: str
    target_site: str
    pools: TargetPools
    _mixed: bool
    """The VMs go different ways: refused, and nothing that needs one direction is checked."""
    _forward: dict[tuple[str, str], MappingUse]
    """By (site, VM network) of the mapping's source; the first mapping of a source wins."""
    _reverse: dict[tuple[str, str], list[MappingUse]]
    """By (site, VM network) of the mapping's target: failbacks, ambiguous when several."""
    _test_targets: dict[tuple[int, bool], TestTarget]
    """By (mapping index, reverse): one decision per mapping, however many NICs use it."""
    _planned_subnets: dict[tuple[str, str], list[str]]
    """The subnets of test networks to be created, by (site, network)."""
    _created: set[CreateTestNetwork]
    overrides: dict[tuple[str, str, int], AddressOverride]
    """``address_overrides`` by (VM, NIC, IP configuration)."""
    _addresses_held: dict[tuple[str, str], dict[str, str]]
    """Per (site, VM network), static address -> VM holding it now; built only when an override asks."""

    def __init__(self, config: AgentConfig, index: InventoryIndex, plan_name: str, kind: PlanKind) -> None:
        self.config = config
        self.idx = index
        self.plan_name = plan_name
        self.kind = kind
        self.test = kind == "test"
        self.refusals = Collector(lambda r: (r.code, r.message))
        self.notes = Collector()
        self.changes = []
        self.vms = []
        self.excluded = []
        self.source_site = ""
        self.target_site = ""
        self.pools = TargetPools(index)
        self._mixed = False
        self._forward = {}
        self._reverse = defaultdict(list)
        for i, m in enumerate(config.network_mappings):
            self._forward.setdefault((m.source.site, m.source.vm_network), MappingUse(i, m, reverse=False))
            self._reverse[(m.target.site, m.target.vm_network)].append(MappingUse(i, m, reverse=True))
        self._test_targets = {}
        self._planned_subnets = {}
        self._created = set()
        self.overrides = {o.key: o for o in config.overrides}
        self._addresses_held = {}

    def note(self, text: str) -> None:
        self.notes.add(text)

    def note_group(self, key: Hashable, build: Callable[[str], str], item: str) -> None:
        """One note for many items: ``build`` gets the items as readable text."""
        self.notes.group(key, lambda items: build(v.names(items)), item)
