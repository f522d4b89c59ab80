"""Read what both sites hold into one :class:`~agent.domain.model.Inventory` for the planner.

Batched like the ports: one ``read_inventory`` per VMM server, one ``get_replications`` and one
``get_failover_configs`` per Hyper-V host, one ``read`` per (DNS server, zone), one
``read_routes`` per router. Nothing here changes anything.

What is read:

* both VMM servers: VM networks, static pools, grants, VMs with NICs;
* every Hyper-V host that holds a VM: the replication of each of its VMs, and the failover
  TCP/IP configuration of each replica NIC;
* DNS, in the configured zones only: A/AAAA of the host names of the recovery plans' VMs, and PTR
  of every address those VMs have, hold in a pool, carry as a failover IP -- or may be given at
  failover (the free addresses of pools the ``change`` mappings point into), so the plan pins
  each record it writes to what is really there;
* routes of the declared subnets on every configured router.

The site that just went dark cannot be read, yet an unplanned failover must still be planned.
Every successful read of a site's VMM, Hyper-V hosts and routers is therefore remembered (in the
agent's store); with ``fallback=True`` an unreachable one is replaced by what was last read
there, and the inventory says so in ``stale`` (the plan shows it as a note).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Literal, Protocol, TypeVar

from agent.config import AgentConfig
from agent.dns.names import HostNameError
from agent.domain.matching import Names
from agent.domain.model import (
    Inventory,
    IpGrant,
    NicFailoverConfig,
    RecordSet,
    RecordType,
    Replication,
    Route,
    StaticIpPool,
    VirtualMachine,
    VmNetwork,
)
from agent.errors import PermanentError, TransientError
from agent.logging import get_logger
from agent.ports import HyperV, Ports, VmmInventory

log = get_logger(__name__)

V = TypeVar("V")

PTR_RANGE_CAP = 1024
"""Most addresses of one pool whose PTR names are read ahead of a failover. Larger pools are
read from their start (where allocation starts) up to this many; a PTR beyond that which turns out
to exist is caught by the DNS update's prerequisite, never overwritten blindly."""


class SiteMemory(Protocol):
    """Where the last good read of each part of a site is kept (the engine's journal)."""

    def save_site_view(self, site: str, part: str, data: Any) -> None: ...

    def load_site_view(self, site: str, part: str) -> tuple[Any, str] | None:
        """(data, when it was read as ISO text), or None."""
        ...


class _Reader:
    def __init__(self, memory: SiteMemory | None, fallback: bool) -> None:
        self.memory = memory
        self.fallback = fallback
        self.stale: list[str] = []

    def read(self, site: str, part: str, what: str, fetch: Callable[[], V], dump: Callable[[V], Any],
             load: Callable[[Any], V]) -> V:
        try:
            value = fetch()
        except TransientError as exc:
            cached = self.memory.load_site_view(site, part) if (self.fallback and self.memory) else None
            if cached is None:
                raise
            log.warning("unreachable: planning from its last known state", site=site, part=part, code=exc.code)
            self.stale.append(f"{what} at {site} is unreachable ({exc.code}): planned from its state as "
                              f"last read at {cached[1]}")
            return load(cached[0])
        if self.memory is not None:
            self.memory.save_site_view(site, part, dump(value))
        return value


def _dump_models(items: Iterable[Any]) -> list[Any]:
    return [i.model_dump(mode="json") for i in items]


def _dump_vmm(inv: VmmInventory) -> dict[str, Any]:
    return {"site": inv.site, "vm_networks": _dump_models(inv.vm_networks), "pools": _dump_models(inv.pools),
            "grants": _dump_models(inv.grants), "vms": _dump_models(inv.vms)}


def _load_vmm(d: dict[str, Any]) -> VmmInventory:
    return VmmInventory(site=d["site"], vm_networks=tuple(VmNetwork.model_validate(x) for x in d["vm_networks"]),
                        pools=tuple(StaticIpPool.model_validate(x) for x in d["pools"]),
                        grants=tuple(IpGrant.model_validate(x) for x in d["grants"]),
                        vms=tuple(VirtualMachine.model_validate(x) for x in d["vms"]))


def gather_inventory(
    config: AgentConfig, ports: Ports, *, dns_purpose: Literal["production", "test"] | None = None,
    memory: SiteMemory | None = None, fallback: bool = False,
) -> Inventory:
    """Read both sites, their hosts, the configured DNS zones and routers into one Inventory.

    ``dns_purpose`` limits DNS reads to the servers of that purpose. Pass it when planning: a
    :class:`RecordSet` does not name its server, so the same zone held by a production and a
    test server would otherwise show both servers' records as one.
    """

    networks: list[VmNetwork] = []
    pools: list[StaticIpPool] = []
    grants: list[IpGrant] = []
    vms: list[VirtualMachine] = []
    reader = _Reader(memory, fallback)
    for site in config.sites:
        inv = reader.read(site.name, "vmm", "VMM", ports.vmm[site.name].read_inventory, _dump_vmm, _load_vmm)
        networks += inv.vm_networks
        pools += inv.pools
        grants += inv.grants
        vms += inv.vms
        log.debug("vmm inventory read", site=site.name, vms=len(inv.vms), pools=len(inv.pools))

    replications, failover_configs, unreadable = _read_hosts(ports, vms, reader)
    record_sets = _read_dns(config, ports, vms, pools, grants, failover_configs, dns_purpose)
    routes = _read_routes(config, ports, reader)
    return Inventory(
        stale=tuple(reader.stale),
        unreadable=tuple(sorted(unreadable.items())),
        vm_networks=tuple(networks),
        pools=tuple(pools),
        grants=tuple(grants),
        vms=tuple(vms),
        replications=tuple(replications),
        failover_configs=tuple(failover_configs),
        record_sets=tuple(record_sets),
        routes=tuple(routes),
    )


def _read_hosts(
    ports: Ports, vms: list[VirtualMachine], reader: _Reader
) -> tuple[list[Replication], list[NicFailoverConfig], dict[str, str]]:
    """Replications and failover configurations, host by host, and the VMs that could not be
    read, with why. A host that refuses its batch is read again VM by VM, so that one VM's
    permanent error costs that VM only: the planner decides what it costs the plan."""
    by_host: dict[tuple[str, str], list[VirtualMachine]] = defaultdict(list)
    for vm in vms:
        by_host[(vm.site, vm.host)].append(vm)
    replications: dict[tuple[str, str, str], Replication] = {}
    configs: list[NicFailoverConfig] = []
    unreadable: dict[str, str] = {}
    for (site, host), on_host in sorted(by_host.items()):
        hyperv = ports.hyperv[site]
        try:
            reps, cfgs = reader.read(
                site, f"host:{host}", f"Hyper-V host {host}", partial(_read_host, hyperv, host, on_host),
                lambda v: {"replications": _dump_models(v[0]), "configs": _dump_models(v[1])},
                lambda d: ([Replication.model_validate(x) for x in d["replications"]],
                           [NicFailoverConfig.model_validate(x) for x in d["configs"]]))
        except PermanentError:
            reps, cfgs = [], []
            for vm in on_host:
                try:
                    one_reps, one_cfgs = _read_host(hyperv, host, [vm])
                except PermanentError as exc:
                    log.warning("VM state unreadable", vm=vm.name, host=host, code=exc.code)
                    unreadable.setdefault(vm.name, f"{exc.code} at {host}: {exc.message}")
                    continue
                reps += one_reps
                cfgs += one_cfgs
        for rep in reps:
            # Both ends of a relationship report it; keep one: the replica host's, which alone
            # lists the recovery points.
            key = (rep.vm, rep.primary_site, rep.replica_site)
            if key not in replications or host == rep.replica_host:
                replications[key] = rep
        configs += cfgs
    return list(replications.values()), configs, unreadable


def _read_host(hyperv: HyperV, host: str, on_host: list[VirtualMachine]
               ) -> tuple[list[Replication], list[NicFailoverConfig]]:
    # Test VMs ("<vm> - Test") have no replication of their own.
    names = sorted({vm.name for vm in on_host if vm.role != "test"})
    nics = [(vm.name, nic.name) for vm in on_host if vm.role == "replica" for nic in vm.nics]
    reps = hyperv.get_replications(host, names) if names else []
    return reps, (hyperv.get_failover_configs(host, nics) if nics else [])


def _plan_vms(config: AgentConfig) -> list[str]:
    return sorted({vm for plan in config.recovery_plans for vm in plan.vms})


def _read_dns(
    config: AgentConfig,
    ports: Ports,
    vms: list[VirtualMachine],
    pools: list[StaticIpPool],
    grants: list[IpGrant],
    failover_configs: list[NicFailoverConfig],
    purpose: str | None,
) -> list[RecordSet]:
    if not config.dns.zones:
        return []
    from agent.domain.planning import host_name, ptr_name

    plan_vms = _plan_vms(config)
    wanted_vms = Names((vm, True) for vm in plan_vms)  # as VMM matches: case-insensitively
    names: set[tuple[str, RecordType]] = set()
    for name in plan_vms:
        try:
            fqdn = host_name(config, name)
        except HostNameError:  # a self-registering VM: the agent does not touch its records
            continue
        if fqdn is not None:
            names.add((fqdn, RecordType.A))
            names.add((fqdn, RecordType.AAAA))

    addresses: set[str] = set()
    nic_ids: set[str] = set()
    for vm in vms:
        if vm.name not in wanted_vms:
            continue
        for nic in vm.nics:
            nic_ids.add(nic.id)
            addresses.update(c.address for c in nic.ip_configurations if c.address)
    addresses.update(g.address for g in grants if g.owner_id in nic_ids)
    addresses.update(s.address for c in failover_configs if c.vm in wanted_vms for s in c.settings)
    addresses.update(_addresses_that_may_be_given(config, pools))
    names.update((ptr_name(a), RecordType.PTR) for a in addresses)

    # Each name goes to the longest configured zone it falls in, on every server of that zone.
    by_zone: dict[tuple[str, str], list[tuple[str, RecordType]]] = defaultdict(list)
    zones_by_server: dict[str, list[str]] = defaultdict(list)
    servers = {s.name: s for s in config.dns.servers}
    for z in config.dns.zones:
        if purpose is None or servers[z.server].purpose == purpose:
            zones_by_server[z.server].append(z.name)
    for server, zones in zones_by_server.items():
        for name, rtype in sorted(names):
            zone = _longest_zone(name, zones)
            if zone is not None:
                by_zone[(server, zone)].append((name, rtype))

    found: list[RecordSet] = []
    for (server, zone), zone_names in sorted(by_zone.items()):
        found += ports.dns[server].read(zone, zone_names)
        log.debug("dns read", server=server, zone=zone, names=len(zone_names))
    return found


def _addresses_that_may_be_given(config: AgentConfig, pools: list[StaticIpPool]) -> Iterable[str]:
    """The addresses of pools that ``change`` mappings point into (either way round: a failback
    goes back into the source network) and of existing test networks, capped per pool."""

    networks = set()
    for m in config.network_mappings:
        if m.ip_strategy == "change":
            networks.add((m.target.site, m.target.vm_network))
            networks.add((m.source.site, m.source.vm_network))
        if m.test_network.mode == "existing" and m.test_network.vm_network:
            # Test VMs take their failover address there if free, else another one.
            networks.add((m.target.site, m.test_network.vm_network))
    for pool in pools:
        if (pool.site, pool.vm_network) not in networks:
            continue
        start = int(ipaddress.ip_address(pool.range_start))
        end = min(int(ipaddress.ip_address(pool.range_end)), start + PTR_RANGE_CAP - 1)
        for value in range(start, end + 1):
            yield str(ipaddress.ip_address(value))


def _longest_zone(name: str, zones: list[str]) -> str | None:
    best = None
    for zone in zones:
        if (name == zone or name.endswith("." + zone) or zone == ".") and (best is None or len(zone) > len(best)):
            best = zone
    return best


def _read_routes(config: AgentConfig, ports: Ports, reader: _Reader) -> list[Route]:
    if not config.subnets:
        return []
    prefixes = [s.prefix for s in config.subnets]
    routers = [r.name for s in config.sites for r in s.routers] + [
        r.name for t in config.third_sites for r in t.routers
    ]
    site_of = {r.name: s.name for s in config.sites for r in s.routers}
    site_of.update({r.name: t.name for t in config.third_sites for r in t.routers})
    found: list[Route] = []
    for router in dict.fromkeys(routers):
        found += reader.read(site_of[router], f"router:{router}", f"router {router}",
                             partial(ports.routes.read_routes, router, prefixes),
                             _dump_models, lambda d: [Route.model_validate(x) for x in d])
    return found
