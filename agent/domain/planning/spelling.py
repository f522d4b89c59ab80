"""The config's VMM names in the inventory's spelling, before anything is planned.

VMM matches names case-insensitively (:mod:`agent.domain.matching`), so a mapping that says
``East-Core`` means the inventory's ``east-core``. Rewriting the config's names once, here, lets
every later lookup of the planner compare exactly, and what the plan writes (and the journal
keeps) is spelled as VMM holds it. VM names are resolved where the plan's VMs are
(:class:`~agent.domain.planning.vms.VmResolution`).
"""

from __future__ import annotations

from collections import defaultdict

from agent.config import AgentConfig, NetworkMapping, NetworkRef
from agent.domain.matching import Names
from agent.domain.model import Inventory


def in_inventory_spelling(config: AgentConfig, inventory: Inventory) -> AgentConfig:
    """``config`` with the VM networks of its mappings spelled as the inventory spells them
    (the same object when nothing differs)."""
    listed: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for net in inventory.vm_networks:
        listed[net.site].append((net.name, net.name))
    by_site = {site: Names(items) for site, items in listed.items()}

    def spell(sites: tuple[str, ...], name: str) -> str:
        for site in sites:
            names = by_site.get(site)
            found = names.spelling(name) if names is not None else None
            if found is not None:
                return found
        return name

    def ref(r: NetworkRef) -> NetworkRef:
        spelled = spell((r.site,), r.vm_network)
        return r if spelled == r.vm_network else r.model_copy(update={"vm_network": spelled})

    mappings: list[NetworkMapping] = []
    for m in config.network_mappings:
        update: dict[str, object] = {}
        source, target = ref(m.source), ref(m.target)
        if source is not m.source:
            update["source"] = source
        if target is not m.target:
            update["target"] = target
        test = m.test_network
        if test.vm_network is not None:
            # An isolated test network is at the target site (at the source, for a failback).
            spelled = spell((m.target.site, m.source.site), test.vm_network)
            if spelled != test.vm_network:
                update["test_network"] = test.model_copy(update={"vm_network": spelled})
        mappings.append(m.model_copy(update=update) if update else m)
    if all(a is b for a, b in zip(mappings, config.network_mappings, strict=True)):
        return config
    return config.model_copy(update={"network_mappings": mappings})
