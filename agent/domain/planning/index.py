"""The inventory indexed once per plan, so the planner's thousands of lookups are dict probes."""

from __future__ import annotations

from collections import defaultdict

from agent.domain.matching import Names, Nearest
from agent.domain.model import (
    FailoverIpSetting,
    Inventory,
    IpGrant,
    RecordSet,
    RecordType,
    Replication,
    Route,
    StaticIpPool,
    VirtualMachine,
    VmNetwork,
)

RouteKey = tuple[str, str, str | None, str | None]
"""What makes two routes the same route: router, prefix, next hop, interface (not the metric)."""


def route_key(route: Route) -> RouteKey:
    return (route.router, route.prefix, route.next_hop, route.interface)


class InventoryIndex:
    """The inventory as dicts, built once per plan so every lookup is O(1)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.vms: dict[tuple[str, str], VirtualMachine] = {}
        self.vms_by_site: dict[str, list[VirtualMachine]] = defaultdict(list)
        for vm in inventory.vms:
            self.vms.setdefault((vm.site, vm.name), vm)
            self.vms_by_site[vm.site].append(vm)
        self.vm_names = {vm.name for vm in inventory.vms}
        self.vm_spelling: Names[str] = Names((vm.name, vm.name) for vm in inventory.vms)
        """Any spelling of a VM name -> the inventory's (VMM matches names case-insensitively)."""
        self.nearest_vm = Nearest(vm.name for vm in inventory.vms)
        """The did-you-mean for a VM name that matches none."""
        self.networks: dict[tuple[str, str], VmNetwork] = {}
        for net in inventory.vm_networks:
            self.networks.setdefault((net.site, net.name), net)
        self.pools_by_subnet: dict[tuple[str, str, str], list[StaticIpPool]] = defaultdict(list)
        self.pool_subnets: dict[tuple[str, str], list[str]] = defaultdict(list)
        for pool in inventory.pools:
            self.pools_by_subnet[(pool.site, pool.vm_network, pool.vm_subnet)].append(pool)
            names = self.pool_subnets[(pool.site, pool.vm_network)]
            if pool.vm_subnet not in names:
                names.append(pool.vm_subnet)
        self.pools_of_network: dict[tuple[str, str], list[StaticIpPool]] = defaultdict(list)
        for pool in inventory.pools:
            self.pools_of_network[(pool.site, pool.vm_network)].append(pool)
        self.grants_by_pool: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        self.grants_by_owner: dict[str, list[IpGrant]] = defaultdict(list)
        for grant in inventory.grants:
            self.grants_by_pool[(grant.site, grant.pool)].append((grant.address, grant.owner_id))
            self.grants_by_owner[grant.owner_id].append(grant)
        self.replications: dict[str, Replication] = {}
        for rep in inventory.replications:
            self.replications.setdefault(rep.vm, rep)
        self.failover: dict[tuple[str, str, str], tuple[FailoverIpSetting, ...]] = {
            (c.host, c.vm, c.nic): c.settings for c in inventory.failover_configs
        }
        self.records: dict[tuple[str, str, RecordType], RecordSet] = {
            (r.zone, r.name, r.type): r for r in inventory.record_sets
        }
        self.routes: set[RouteKey] = {route_key(r) for r in inventory.routes}

    def subnet_names(self, site: str, network: VmNetwork) -> list[str]:
        """The network's VM subnets in order; for a network that lists none (No Isolation
        networks use their logical network's), the subnets its pools sit on."""
        if network.subnets:
            return [s.name for s in network.subnets]
        return list(self.pool_subnets.get((site, network.name), ()))
