"""Read what both sites hold into one :class:`~agent.domain.model.Inventory` for the planner.

Batched like the ports: one ``read_inventory`` per VMM server, one ``get_replications`` and one
``get_failover_configs`` per Hyper-V host, one ``read`` per (DNS server, zone), one
``read_routes`` per router. Nothing here changes anything. The calls run concurrently, within
the config's concurrency limits (:func:`gather_inventory` says in what order).

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

import contextvars
import ipaddress
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
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
W = TypeVar("W")

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


class Slots(Protocol):
    """Concurrency slots per target (the engine's ``HostLimits``): a read holds one while it calls,
    so reads and running operations share the config's ``policies.concurrency`` limits."""

    def slot(self, target: str | None) -> AbstractContextManager[Any]: ...


class _Limits:
    """The config's limits for reads made without an engine (``validate``, ``sites``, tests)."""

    def __init__(self, per_host: int, global_limit: int) -> None:
        self._global = threading.BoundedSemaphore(global_limit)
        self._hosts: dict[str, threading.BoundedSemaphore] = defaultdict(lambda: threading.BoundedSemaphore(per_host))
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, target: str | None) -> Iterator[None]:
        with self._lock:
            host = self._hosts[target or ""]
        with host, self._global:
            yield


class _Calls:
    """Where the reads run: each remote call in a worker of ``calls`` holding its target's slot,
    and each wait for calls (a host's two reads, then its VM-by-VM retry) in a worker of
    ``waits``. A worker of ``calls`` never waits for another call, so the two bounded pools cannot
    starve each other. Every task runs in a copy of the caller's context: its log lines keep the
    operation or request they were made for."""

    def __init__(self, limits: Slots, calls: ThreadPoolExecutor, waits: ThreadPoolExecutor) -> None:
        self.limits, self._calls, self._waits = limits, calls, waits

    def call(self, target: str, fn: Callable[[], V]) -> Future[V]:
        """``fn()`` in a worker, holding ``target``'s slot."""
        return self._calls.submit(contextvars.copy_context().run, self._slotted(target, fn))

    def read(self, target: str, fn: Callable[[], V], then: Callable[[Callable[[], V]], W]) -> Future[W]:
        """``then(fetch)`` in a worker, ``fetch`` calling ``fn()`` with ``target``'s slot held: what
        ``then`` does once it has the answer (save it, or fall back) holds no slot."""
        return self._calls.submit(contextvars.copy_context().run, partial(then, self._slotted(target, fn)))

    def _slotted(self, target: str, fn: Callable[[], V]) -> Callable[[], V]:
        def fetch() -> V:
            with self.limits.slot(target):
                return fn()

        return fetch

    def wait(self, fn: Callable[[], W]) -> Future[W]:
        return self._waits.submit(contextvars.copy_context().run, fn)


class _Reader:
    def __init__(self, memory: SiteMemory | None, fallback: bool) -> None:
        self.memory = memory
        self.fallback = fallback
        self._stale: list[tuple[tuple[Any, ...], str]] = []
        self._lock = threading.Lock()

    @property
    def stale(self) -> list[str]:
        """The parts planned from their last known state, in the order a sequential read meets them."""
        with self._lock:
            return [note for _, note in sorted(self._stale)]

    def read(self, order: tuple[Any, ...], site: str, part: str, what: str, dump: Callable[[V], Any],
             load: Callable[[Any], V], fetch: Callable[[], V]) -> V:
        try:
            value = fetch()
        except TransientError as exc:
            cached = self.memory.load_site_view(site, part) if (self.fallback and self.memory) else None
            if cached is None:
                raise
            log.warning("unreachable: planning from its last known state", site=site, part=part, code=exc.code)
            with self._lock:
                self._stale.append((order, f"{what} at {site} is unreachable ({exc.code}): planned from its "
                                           f"state as last read at {cached[1]}"))
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


WAITERS = 64
"""Threads that wait for a host's reads to settle them (each waits; none calls anything)."""


def gather_inventory(
    config: AgentConfig, ports: Ports, *, dns_purpose: Literal["production", "test"] | None = None,
    memory: SiteMemory | None = None, fallback: bool = False, limits: Slots | None = None,
) -> Inventory:
    """Read both sites, their hosts, the configured DNS zones and routers into one Inventory.

    ``dns_purpose`` limits DNS reads to the servers of that purpose. Pass it when planning: a
    :class:`RecordSet` does not name its server, so the same zone held by a production and a
    test server would otherwise show both servers' records as one.

    The reads overlap as far as what they need allows: both VMM servers, every router and the
    forward DNS zones (the host names come from the config) at once; each site's Hyper-V hosts
    (replications and failover configurations side by side) as soon as its VMM has said which
    hosts hold VMs; the reverse zones once every host has answered (their PTR names include the
    failover IPs found there). At most ``limits`` at a time (default: the
    config's ``policies.concurrency``; the engine passes its own, shared with running operations).
    Whichever answers first, the inventory is assembled in one fixed order, and a failure raises
    the error that reading one endpoint after another would have met first.
    """

    pol = config.policies.concurrency
    slots = limits if limits is not None else _Limits(pol.per_host, pol.global_limit)
    reader = _Reader(memory, fallback)
    with ThreadPoolExecutor(pol.global_limit, thread_name_prefix="read") as calls_pool, \
            ThreadPoolExecutor(WAITERS, thread_name_prefix="read-wait") as waits_pool:
        try:
            return _gather(config, ports, dns_purpose, reader, _Calls(slots, calls_pool, waits_pool))
        except BaseException:
            # Nothing more is worth reading once the inventory cannot be had; what runs ends on its own.
            waits_pool.shutdown(wait=False, cancel_futures=True)
            calls_pool.shutdown(wait=False, cancel_futures=True)
            raise


def _gather(config: AgentConfig, ports: Ports, dns_purpose: str | None, reader: _Reader, calls: _Calls
            ) -> Inventory:
    vmm_reads = {site.name: calls.read(site.name, ports.vmm[site.name].read_inventory,
                                       partial(reader.read, (0, i), site.name, "vmm", "VMM", _dump_vmm, _load_vmm))
                 for i, site in enumerate(config.sites)}
    route_reads = _start_routes(config, ports, reader, calls)
    dns = _DnsReads(config, ports, dns_purpose, calls)
    host_reads: dict[tuple[str, str], Future[_HostRead]] = {}
    pending: set[Future[VmmInventory]] = set(vmm_reads.values())
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for read in done:
            if read.exception() is None:
                host_reads.update(_start_hosts(ports, read.result().vms, reader, calls))

    networks: list[VmNetwork] = []
    pools: list[StaticIpPool] = []
    grants: list[IpGrant] = []
    vms: list[VirtualMachine] = []
    for site in config.sites:
        inv = vmm_reads[site.name].result()
        networks += inv.vm_networks
        pools += inv.pools
        grants += inv.grants
        vms += inv.vms
        log.debug("vmm inventory read", site=site.name, vms=len(inv.vms), pools=len(inv.pools))

    replications, failover_configs, unreadable = _hosts_read(host_reads)
    record_sets = dns.finish(vms, pools, grants, failover_configs)
    routes = [route for read in route_reads for route in read.result()]
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


_HostRead = tuple[list[Replication], list[NicFailoverConfig], dict[str, str]]
"""A host's replications and failover configurations, and the VMs it could not say, with why."""


def _dump_host(v: tuple[list[Replication], list[NicFailoverConfig]]) -> dict[str, Any]:
    return {"replications": _dump_models(v[0]), "configs": _dump_models(v[1])}


def _load_host(d: dict[str, Any]) -> tuple[list[Replication], list[NicFailoverConfig]]:
    return ([Replication.model_validate(x) for x in d["replications"]],
            [NicFailoverConfig.model_validate(x) for x in d["configs"]])


def _start_hosts(ports: Ports, vms: Iterable[VirtualMachine], reader: _Reader, calls: _Calls
                 ) -> dict[tuple[str, str], Future[_HostRead]]:
    by_host: dict[tuple[str, str], list[VirtualMachine]] = defaultdict(list)
    for vm in vms:
        by_host[(vm.site, vm.host)].append(vm)
    return {(site, host): _start_host(ports.hyperv[site], site, host, on_host, reader, calls)
            for (site, host), on_host in by_host.items()}


def _start_host(hyperv: HyperV, site: str, host: str, on_host: list[VirtualMachine], reader: _Reader,
                calls: _Calls) -> Future[_HostRead]:
    """A host's two reads, side by side. A host that refuses its batch is read again VM by VM,
    so that one VM's permanent error costs that VM only: the planner decides what it costs the
    plan. Either read's error counts as the host's, the replications' first (as when they were
    read one after the other)."""
    names, nics = _host_queries(on_host)
    reps = calls.call(host, partial(hyperv.get_replications, host, names)) if names else None
    cfgs = calls.call(host, partial(hyperv.get_failover_configs, host, nics)) if nics else None

    def fetch() -> tuple[list[Replication], list[NicFailoverConfig]]:
        return (reps.result() if reps else []), (cfgs.result() if cfgs else [])

    def settle() -> _HostRead:
        try:
            found = reader.read((1, site, host), site, f"host:{host}", f"Hyper-V host {host}", _dump_host,
                                _load_host, fetch)
            return found[0], found[1], {}
        except PermanentError:
            return _vm_by_vm(hyperv, host, on_host, calls)

    return calls.wait(settle)


def _vm_by_vm(hyperv: HyperV, host: str, on_host: list[VirtualMachine], calls: _Calls) -> _HostRead:
    one_by_one = [calls.call(host, partial(_read_host, hyperv, host, [vm])) for vm in on_host]
    reps: list[Replication] = []
    cfgs: list[NicFailoverConfig] = []
    unreadable: dict[str, str] = {}
    for vm, read in zip(on_host, one_by_one, strict=True):
        try:
            one_reps, one_cfgs = read.result()
        except PermanentError as exc:
            log.warning("VM state unreadable", vm=vm.name, host=host, code=exc.code)
            unreadable.setdefault(vm.name, f"{exc.code} at {host}: {exc.message}")
            continue
        reps += one_reps
        cfgs += one_cfgs
    return reps, cfgs, unreadable


def _hosts_read(host_reads: dict[tuple[str, str], Future[_HostRead]]) -> _HostRead:
    """Every host's answer, host by host in name order (which answered first does not matter)."""
    replications: dict[tuple[str, str, str], Replication] = {}
    configs: list[NicFailoverConfig] = []
    unreadable: dict[str, str] = {}
    for site, host in sorted(host_reads):
        reps, cfgs, left_out = host_reads[(site, host)].result()
        for vm, why in left_out.items():
            unreadable.setdefault(vm, why)
        for rep in reps:
            # Both ends of a relationship report it; keep one: the replica host's, which alone
            # lists the recovery points.
            key = (rep.vm, rep.primary_site, rep.replica_site)
            if key not in replications or host == rep.replica_host:
                replications[key] = rep
        configs += cfgs
    return list(replications.values()), configs, unreadable


def _host_queries(on_host: list[VirtualMachine]) -> tuple[list[str], list[tuple[str, str]]]:
    # Test VMs ("<vm> - Test") have no replication of their own.
    names = sorted({vm.name for vm in on_host if vm.role != "test"})
    nics = [(vm.name, nic.name) for vm in on_host if vm.role == "replica" for nic in vm.nics]
    return names, nics


def _read_host(hyperv: HyperV, host: str, on_host: list[VirtualMachine]
               ) -> tuple[list[Replication], list[NicFailoverConfig]]:
    names, nics = _host_queries(on_host)
    reps = hyperv.get_replications(host, names) if names else []
    return reps, (hyperv.get_failover_configs(host, nics) if nics else [])


def _plan_vms(config: AgentConfig) -> list[str]:
    return sorted({vm for plan in config.recovery_plans for vm in plan.vms})


class _DnsReads:
    """The DNS reads: one per (server, zone) holding a name the plan may write. The host names'
    A/AAAA records are known from the config alone, so a zone no PTR name can fall in is read at
    once, beside the VMM servers; the others wait for the addresses, which include the failover
    IPs the hosts hold."""

    def __init__(self, config: AgentConfig, ports: Ports, purpose: str | None, calls: _Calls) -> None:
        self.config, self.ports, self.calls = config, ports, calls
        self.plan_vms = _plan_vms(config)
        # Each name goes to the longest configured zone it falls in, on every server of that zone.
        self.zones_by_server: dict[str, list[str]] = defaultdict(list)
        servers = {s.name: s for s in config.dns.servers}
        for z in config.dns.zones:
            if purpose is None or servers[z.server].purpose == purpose:
                self.zones_by_server[z.server].append(z.name)
        self.host_names = self._host_names() if config.dns.zones else set()
        early = {key: names for key, names in self._by_zone(self.host_names).items() if not _may_hold_ptr(key[1])}
        self.reads = {key: self._start(key, names) for key, names in early.items()}

    def _host_names(self) -> set[tuple[str, RecordType]]:
        from agent.domain.planning import host_name

        names: set[tuple[str, RecordType]] = set()
        for name in self.plan_vms:
            try:
                fqdn = host_name(self.config, name)
            except HostNameError:  # a self-registering VM: the agent does not touch its records
                continue
            if fqdn is not None:
                names.add((fqdn, RecordType.A))
                names.add((fqdn, RecordType.AAAA))
        return names

    def _by_zone(self, names: set[tuple[str, RecordType]]) -> dict[tuple[str, str], list[tuple[str, RecordType]]]:
        by_zone: dict[tuple[str, str], list[tuple[str, RecordType]]] = defaultdict(list)
        for server, zones in self.zones_by_server.items():
            for name, rtype in sorted(names):
                zone = _longest_zone(name, zones)
                if zone is not None:
                    by_zone[(server, zone)].append((name, rtype))
        return by_zone

    def _start(self, key: tuple[str, str], names: list[tuple[str, RecordType]]
               ) -> tuple[int, Future[list[RecordSet]]]:
        server, zone = key
        return len(names), self.calls.call(server, partial(self.ports.dns[server].read, zone, names))

    def finish(self, vms: list[VirtualMachine], pools: list[StaticIpPool], grants: list[IpGrant],
               failover_configs: list[NicFailoverConfig]) -> list[RecordSet]:
        """The zones left, once the sites' addresses are known; every zone's records, in zone order."""
        if not self.config.dns.zones:
            return []
        from agent.domain.planning import ptr_name

        wanted_vms = Names((vm, True) for vm in self.plan_vms)  # as VMM matches: case-insensitively
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
        addresses.update(_addresses_that_may_be_given(self.config, pools))
        names = self.host_names | {(ptr_name(a), RecordType.PTR) for a in addresses}
        for key, zone_names in self._by_zone(names).items():
            if key not in self.reads:
                self.reads[key] = self._start(key, zone_names)
        found: list[RecordSet] = []
        for (server, zone), (count, read) in sorted(self.reads.items(), key=lambda kv: kv[0]):
            found += read.result()
            log.debug("dns read", server=server, zone=zone, names=count)
        return found


def _may_hold_ptr(zone: str) -> bool:
    """Whether a reverse-lookup name (``...in-addr.arpa.``, ``...ip6.arpa.``) can fall in ``zone``."""
    name = zone.rstrip(".").lower()
    return name in ("", "arpa") or name.endswith(".arpa")


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


def _start_routes(config: AgentConfig, ports: Ports, reader: _Reader, calls: _Calls) -> list[Future[list[Route]]]:
    if not config.subnets:
        return []
    prefixes = [s.prefix for s in config.subnets]
    routers = [r.name for s in config.sites for r in s.routers] + [
        r.name for t in config.third_sites for r in t.routers
    ]
    site_of = {r.name: s.name for s in config.sites for r in s.routers}
    site_of.update({r.name: t.name for t in config.third_sites for r in t.routers})
    return [calls.read(router, partial(ports.routes.read_routes, router, prefixes),
                       partial(reader.read, (2, i), site_of[router], f"router:{router}", f"router {router}",
                               _dump_models, _load_routes))
            for i, router in enumerate(dict.fromkeys(routers))]


def _load_routes(d: list[Any]) -> list[Route]:
    return [Route.model_validate(x) for x in d]


@dataclass(frozen=True)
class VmStates:
    """VMs and their replications as the sites report them now, for a recovery plan's state."""

    replications: tuple[Replication, ...]
    machines: tuple[VirtualMachine, ...]
    unread: tuple[str, ...]
    """The sites that could not be read, left out: a remembered state is no confirmation, and the
    other end of each relationship reports it too. (Why is logged.)"""


def read_vm_states(config: AgentConfig, ports: Ports, names: Iterable[str], *, limits: Slots | None = None
                   ) -> VmStates:
    """The VMs named and their replications, both sites and their hosts read concurrently (as in
    :func:`gather_inventory`), assembled site by site and host by host in name order."""
    wanted = set(names)
    pol = config.policies.concurrency
    slots = limits if limits is not None else _Limits(pol.per_host, pol.global_limit)
    with ThreadPoolExecutor(pol.global_limit, thread_name_prefix="read") as pool:
        calls = _Calls(slots, pool, pool)  # nothing here waits inside a worker
        try:
            return _read_vm_states(config, ports, wanted, calls)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _read_vm_states(config: AgentConfig, ports: Ports, wanted: set[str], calls: _Calls) -> VmStates:
    sites = [s.name for s in config.sites]
    vmm_reads = {site: calls.call(site, ports.vmm[site].read_inventory) for site in sites}
    host_reads: dict[str, dict[str, Future[list[Replication]]]] = {}
    pending: set[Future[VmmInventory]] = set(vmm_reads.values())
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for site in sites:
            read = vmm_reads[site]
            if read in done and read.exception() is None:
                by_host: dict[str, list[str]] = {}
                for v in read.result().vms:
                    if v.name in wanted and v.role != "test":
                        by_host.setdefault(v.host, []).append(v.name)
                host_reads[site] = {host: calls.call(host, partial(ports.hyperv[site].get_replications, host,
                                                                   sorted(on_host)))
                                    for host, on_host in by_host.items()}
    replications: list[Replication] = []
    machines: list[VirtualMachine] = []
    unread: list[str] = []
    for site in sites:
        try:
            vms = [v for v in vmm_reads[site].result().vms if v.name in wanted]
            for host in sorted(host_reads[site]):
                replications += host_reads[site][host].result()
        except TransientError as exc:
            log.warning("site not read for the plan state", site=site, code=exc.code)
            unread.append(site)
            continue
        machines += vms
    return VmStates(tuple(replications), tuple(machines), tuple(unread))
