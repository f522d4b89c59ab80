"""Planning: from config + inventory to a :class:`~agent.domain.plan.Plan`. Pure; no I/O.

``build_plan(config, inventory, plan_name, kind)`` works out, for every NIC and IP configuration
of every VM of a recovery plan, what the failover will change:

* **Direction.** A VM fails over from where it runs as primary (its ``Replication``) to its
  replica site; all VMs of a plan must go the same way.
* **Network mapping** by (source site, source VM network); a mapping whose *target* is the
  source network is used in reverse (failback). The replica connects to the target network's
  subnet with the source subnet's name, else its first subnet (the source documents' rule).
* **Addresses** per IP configuration, by the mapping's ``ip_strategy``: ``retain`` keeps the
  source address when it is free in the target pool, else any free one; ``change`` takes the
  lowest free one; ``dhcp`` (or a DHCP configuration) is left alone. The replica NIC's existing
  grants are reused, never doubled (see :func:`agent.domain.ipam.allocate`).
* **Failover IPs** (planned/unplanned): one setting per static IP configuration with the pool's
  prefix length, gateway and DNS servers.
* **Test failover** (kind ``test``): a test network (none / existing isolated / created copy),
  test addresses (the failover address when free there), the test VM's connection, test DNS.
  It never touches production: no failover IPs, no routes, no production DNS, no replica NICs.
* **Routes** (planned/unplanned): a declared, non-stretched subnet whose addresses are retained
  moves whole -- withdraw at the source site, announce at the target site, repoint third sites.
* **DNS**: A/AAAA and PTR for every address that changes, in the longest configured zone.

Everything that breaks a rule is collected and raised together as
:class:`~agent.domain.validation.PlanRefused` before a Plan exists.

A plan is idempotent: every change that already holds per the inventory is left out (a grant
that exists is listed as ``ReserveIp(existing=True)`` and does not count as a change), so
planning again after a successful run shows nothing to do.

Performance: the inventory is indexed once into dicts; addresses are allocated as integers per
pool; the partial-subnet check is one pass over the source site's VMs with a prefix index. 10,000
VMs with 30,000 IP configurations plan in well under two seconds (tests/benchmarks).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from agent.config import AgentConfig, NetworkMapping, WholeSubnet
from agent.domain import validation as v
from agent.domain.ipam import AddressRequest, PrefixIndex, allocate, to_int
from agent.domain.model import (
    FailoverIpSetting,
    Inventory,
    IpGrant,
    Isolation,
    Nic,
    RecordSet,
    RecordType,
    Replication,
    Route,
    StaticIpPool,
    VirtualMachine,
    VmNetwork,
    name_test_vm,
)
from agent.domain.plan import (
    ttl_lowering,
    PLAN_KINDS,
    Change,
    ConnectNic,
    CreateTestNetwork,
    DnsChange,
    MoveRoute,
    Plan,
    PlanKind,
    PlannedVm,
    ReserveIp,
    SetFailoverIp,
    name_test_network,
)
from agent.domain.validation import PlanRefused, Refusal
from agent.gcpause import gc_paused

T = TypeVar("T")

__all__ = ["InventoryIndex", "PlanRefused", "build_plan", "choose_subnet", "host_name", "ptr_name"]


# ------------------------------------------------------------------------------ inventory


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
        self.failover = {(c.host, c.vm, c.nic): c.settings for c in inventory.failover_configs}
        self.records: dict[tuple[str, str, RecordType], RecordSet] = {
            (r.zone, r.name, r.type): r for r in inventory.record_sets
        }
        self.routes = {_route_key(r) for r in inventory.routes}

    def subnet_names(self, site: str, network: VmNetwork) -> list[str]:
        """The network's VM subnets in order; for a network that lists none (No Isolation
        networks use their logical network's), the subnets its pools sit on."""
        if network.subnets:
            return [s.name for s in network.subnets]
        return list(self.pool_subnets.get((site, network.name), ()))


def _route_key(route: Route) -> tuple:
    return (route.router, route.prefix, route.next_hop, route.interface)


def choose_subnet(candidates: Sequence[str], source_subnet: str | None) -> str | None:
    """The mapping rule of the source documents: the target subnet with the source subnet's
    name, else the first target subnet (None: the target network has none)."""
    if source_subnet is not None and source_subnet in candidates:
        return source_subnet
    return candidates[0] if candidates else None


def host_name(config: AgentConfig, vm: str) -> str | None:
    """A VM's DNS name (fully qualified, lower case): ``dns.hostnames[vm]``, else
    ``<vm lower>.<dns.default_domain>``; None when neither is configured."""
    name = config.dns.hostnames.get(vm)
    if name is None:
        if config.dns.default_domain is None:
            return None
        name = f"{vm.lower()}.{config.dns.default_domain}"
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


# ---------------------------------------------------------------------------- work items


@dataclass(slots=True, eq=False)
class _Slot:
    """One static IP configuration of one NIC: what it had, what it will get."""

    key: tuple[int, int, int]
    nic: _NicWork
    ip_index: int
    version: int
    source: str
    source_int: int
    strategy: str
    pool: StaticIpPool | None = None
    address: str | None = None
    existing: bool = False
    retained: bool = False
    """The replica stays in the source address's subnet (retain, and the pool covers it)."""
    test_pool: StaticIpPool | None = None
    test_address: str | None = None
    test_existing: bool = False

    @property
    def label(self) -> str:
        return f"{self.nic.vm.name}/{self.nic.name}#{self.ip_index}"


@dataclass(slots=True, eq=False)
class _TestTarget:
    """Where test VMs of one mapping connect."""

    mode: str
    name: str | None = None
    network: VmNetwork | None = None
    """None with mode ``create``: the network does not exist yet (planned copy)."""
    isolation: Isolation | None = None
    usable: bool = True


@dataclass(slots=True, eq=False)
class _NicWork:
    vm: _VmWork
    name: str
    pos: int
    replica_nic: Nic
    target_network: str
    target_subnet: str
    slots: list[_Slot] = field(default_factory=list)
    test: _TestTarget | None = None
    test_subnet: str | None = None
    test_nic: Nic | None = None

    @property
    def label(self) -> str:
        return f"{self.vm.name}/{self.name}"


@dataclass(slots=True, eq=False)
class _VmWork:
    name: str
    pos: int
    planned: PlannedVm
    primary: VirtualMachine
    replica: VirtualMachine
    replication: Replication
    test_vm: str
    nics: list[_NicWork] = field(default_factory=list)


class _Collector(Generic[T]):
    """Refusals or notes in discovery order. A grouped entry is built once at the end from
    every item (NIC, VM) it concerns, so 10,000 VMs on one unmapped network make one line
    that names them, not 10,000 lines; equal single entries are kept once."""

    def __init__(self, identity: Callable[[T], Hashable] = lambda e: e) -> None:
        self._entries: list[T | list] = []
        self._groups: dict[Hashable, list] = {}
        self._seen: set[Hashable] = set()
        self._identity = identity

    def add(self, entry: T) -> None:
        key = self._identity(entry)
        if key not in self._seen:
            self._seen.add(key)
            self._entries.append(entry)

    def group(self, key: Hashable, build: Callable[[list[str]], T | None], item: str) -> None:
        entry = self._groups.get(key)
        if entry is None:
            entry = self._groups[key] = [build, []]
            self._entries.append(entry)
        entry[1].append(item)

    def build(self) -> list[T]:
        out = []
        for e in self._entries:
            r = e[0](e[1]) if isinstance(e, list) else e
            if r is not None:
                out.append(r)
        return out


# ------------------------------------------------------------------------------- planner


def build_plan(config: AgentConfig, inventory: Inventory, plan_name: str, kind: PlanKind) -> Plan:
    """The Plan for a ``kind`` failover of recovery plan ``plan_name``.

    Raises :class:`~agent.domain.validation.PlanRefused` (code ``plan_refused``) carrying every
    reason the plan cannot run; nothing has changed anywhere when it does.
    """
    if kind not in PLAN_KINDS:
        raise ValueError(f"unknown plan kind {kind!r}; expected one of {PLAN_KINDS}")
    with gc_paused():
        return _Planner(config, InventoryIndex(inventory), plan_name, kind).build()


class _Planner:
    def __init__(self, config: AgentConfig, index: InventoryIndex, plan_name: str, kind: PlanKind) -> None:
        self.config = config
        self.idx = index
        self.plan_name = plan_name
        self.kind = kind
        self.test = kind == "test"
        self.refusals: _Collector[Refusal] = _Collector(lambda r: (r.code, r.message))
        self.notes: _Collector[str] = _Collector()
        self.changes: list[Change] = []
        self.vms: list[_VmWork] = []
        self.source_site = ""
        self.target_site = ""
        self._mixed = False
        self._forward: dict[tuple[str, str], tuple[int, NetworkMapping]] = {}
        self._reverse: dict[tuple[str, str], list[tuple[int, NetworkMapping]]] = defaultdict(list)
        for i, m in enumerate(config.network_mappings):
            self._forward.setdefault((m.source.site, m.source.vm_network), (i, m))
            self._reverse[(m.target.site, m.target.vm_network)].append((i, m))
        self._test_targets: dict[tuple[int, bool], _TestTarget] = {}
        self._planned_pools: dict[tuple[str, str, str], list[StaticIpPool]] = {}
        self._planned_subnets: dict[tuple[str, str], list[str]] = {}
        self._created: set[CreateTestNetwork] = set()
        self._pool_cache: dict[tuple[str, str, str, int], list[StaticIpPool]] = {}
        self._ranges: dict[tuple[str, str], tuple[int, int]] = {}
        self._nets: dict[tuple[str, str], tuple[int, int, int, int]] = {}

    def note(self, text: str) -> None:
        self.notes.add(text)

    def note_group(self, key: Hashable, build: Callable[[str], str], item: str) -> None:
        """One note for many items: ``build`` gets the items as readable text."""
        self.notes.group(key, lambda items: build(v.names(items)), item)

    # ---------------------------------------------------------------------------- build

    def build(self) -> Plan:
        recovery_plan = self.config.plan(self.plan_name)
        if recovery_plan is None:
            known = [p.name for p in self.config.recovery_plans]
            raise PlanRefused.of([v.unknown_plan(self.plan_name, known)], plan=self.plan_name, kind=self.kind)
        self._resolve_vms(recovery_plan)
        for vm in self.vms:
            for pos, nic in enumerate(vm.primary.nics):
                self._plan_nic(vm, pos, nic)
        slots = [s for vm in self.vms for n in vm.nics for s in n.slots]
        self._allocate_failover(slots)
        if self.test:
            self._allocate_test(slots)
        moved: list[WholeSubnet] = []
        if not self.test and not self._mixed:
            moved = self._check_subnets(slots)
        refusals = self.refusals.build()
        if refusals:
            raise PlanRefused.of(refusals, plan=self.plan_name, kind=self.kind)

        if self.test:
            self._test_changes()
        else:
            self._failover_changes()
            self._route_changes(moved)
        self._dns_changes()
        plan = Plan(
            plan=self.plan_name,
            kind=self.kind,
            source_site=self.source_site,
            target_site=self.target_site,
            vms=tuple(vm.planned for vm in self.vms),
            changes=Plan.sort_changes(self.changes),
            notes=tuple(self.notes.build()),
        )
        ttl = self.config.dns.ttl
        if self.kind == "planned" and ttl.lower_before_planned:
            lowered, wait_s = ttl_lowering(plan, ttl.failover_ttl)
            if lowered:
                plan = Plan(plan=plan.plan, kind=plan.kind, source_site=plan.source_site,
                            target_site=plan.target_site, vms=plan.vms, changes=plan.changes,
                            notes=(*plan.notes,
                                   f"before failover: the TTL of {len(lowered)} DNS records drops to "
                                   f"{ttl.failover_ttl} s, then the failover waits {wait_s} s "
                                   f"(the longest old TTL) so no resolver still caches an old address"))
        return plan

    # ---------------------------------------------------------------------------- VMs

    def _resolve_vms(self, recovery_plan) -> None:
        directions: dict[tuple[str, str], list[str]] = defaultdict(list)
        self_registering = set(self.config.dns.self_registering_vms)
        pos = 0
        for g_index, group in enumerate(recovery_plan.groups):
            for name in group.vms:
                rep = self.idx.replications.get(name)
                if rep is None:
                    if name in self.idx.vm_names:
                        self.refusals.add(v.vm_not_replicated(name))
                    else:
                        self.refusals.add(v.vm_not_found(name))
                    continue
                primary = self.idx.vms.get((rep.primary_site, name))
                if primary is None:
                    self.refusals.add(v.vm_not_found(name, rep.primary_site))
                    continue
                replica = self.idx.vms.get((rep.replica_site, name))
                if replica is None:
                    self.refusals.add(v.replica_not_found(name, rep.replica_site, rep.replica_host))
                    continue
                directions[(rep.primary_site, rep.replica_site)].append(name)
                planned = PlannedVm(
                    name=name,
                    group=group.name,
                    group_index=g_index,
                    source_site=rep.primary_site,
                    source_host=rep.primary_host,
                    target_site=rep.replica_site,
                    target_host=rep.replica_host,
                    self_registering=name in self_registering,
                )
                self.vms.append(_VmWork(
                    name=name, pos=pos, planned=planned, primary=primary, replica=replica,
                    replication=rep, test_vm=rep.test_vm or name_test_vm(name),
                ))
                pos += 1
        if len(directions) > 1:
            self._mixed = True
            self.refusals.add(v.mixed_directions(dict(directions)))
        if directions:
            # The direction most VMs take names the plan; with mixed directions it is refused anyway.
            (self.source_site, self.target_site), _ = max(directions.items(), key=lambda kv: (len(kv[1]), kv[0]))

    # ---------------------------------------------------------------------------- NICs

    def _mapping(self, vm: _VmWork, nic: Nic) -> tuple[int, NetworkMapping, bool] | None:
        site = vm.planned.source_site
        hit = self._forward.get((site, nic.vm_network))
        if hit is not None:
            return hit[0], hit[1], False
        reverse = self._reverse.get((site, nic.vm_network), [])
        if len(reverse) > 1:
            self.refusals.add(v.ambiguous_reverse_mapping(
                vm.name, nic.name, nic.vm_network, site, [i for i, _ in reverse]
            ))
            return None
        if reverse:
            return reverse[0][0], reverse[0][1], True
        return None

    def _plan_nic(self, vm: _VmWork, pos: int, nic: Nic) -> None:
        label = f"{vm.name}/{nic.name}"
        target_site = vm.planned.target_site
        if nic.vm_network is None:
            self.note(f"VM {vm.name} NIC {nic.name} is not connected at {vm.planned.source_site}: nothing to do")
            return
        replica_nic = vm.replica.nic(nic.name)
        if replica_nic is None:
            self.refusals.add(v.replica_nic_not_found(vm.name, nic.name, target_site))
            return
        static = [(i, c) for i, c in enumerate(nic.ip_configurations) if c.mode == "static"]
        found = self._mapping(vm, nic)
        if found is None:
            if (vm.planned.source_site, nic.vm_network) in self._reverse:
                return  # ambiguous reverse mapping: refused in _mapping
            refusal = v.no_network_mapping(vm.name, nic.name, nic.vm_network, vm.planned.source_site)
            self.note(refusal.message)
            if static:
                self.refusals.add(refusal)
            return
        m_index, mapping, reverse = found
        target_ref = mapping.source if reverse else mapping.target
        if target_ref.site != target_site:
            self.refusals.add(v.mapping_site_mismatch(vm.name, nic.name, target_ref.site, target_site, m_index))
            return
        target = self.idx.networks.get((target_site, target_ref.vm_network))
        if target is None:
            self.refusals.group(
                (v.TARGET_NETWORK_NOT_FOUND, target_site, target_ref.vm_network),
                lambda nics, n=target_ref.vm_network, s=target_site: v.target_network_not_found(n, s, nics),
                label,
            )
            return
        subnet = choose_subnet(self.idx.subnet_names(target_site, target), nic.vm_subnet) or ""
        if nic.vm_subnet and subnet != nic.vm_subnet:
            self.note(
                f"VM {vm.name} NIC {nic.name}: target network {target.name} has no subnet named "
                f"{nic.vm_subnet}; the replica connects to its first subnet {subnet or '(none)'}"
            )
        work = _NicWork(vm=vm, name=nic.name, pos=pos, replica_nic=replica_nic,
                        target_network=target.name, target_subnet=subnet)
        vm.nics.append(work)

        subnet_pools = self.idx.pools_by_subnet.get((target_site, target.name, subnet), [])
        if target.isolation == Isolation.WNV and not subnet_pools:
            self.refusals.group(
                (v.WNV_TARGET_WITHOUT_POOL, target_site, target.name, subnet),
                lambda nics, n=target.name, sn=subnet, s=target_site: v.wnv_target_without_pool(n, sn, s, nics),
                label,
            )
        strategy = mapping.ip_strategy
        if strategy == "dhcp" and static:
            self.note_group(
                ("dhcp-strategy", m_index),
                lambda items, i=m_index: f"network_mappings[{i}] says dhcp: static addresses of {items} are not "
                                         f"managed (the target DHCP server must serve them)",
                label,
            )
        for i, c in enumerate(nic.ip_configurations):
            if c.mode == "dhcp":
                self.note_group(
                    ("dhcp", target_site, target.name),
                    lambda items, s=target_site, n=target.name: f"DHCP IP configurations are not managed; the "
                                                                f"DHCP server at {s} must serve network {n}: {items}",
                    f"{label}#{i}",
                )
        if strategy != "dhcp":
            for i, c in static:
                version, value = _parse(c.address)
                slot = _Slot(key=(vm.pos, pos, i), nic=work, ip_index=i, version=version,
                             source=c.address, source_int=value, strategy=strategy)
                slot.pool = self._target_pool(target_site, target.name, subnet, version, value, strategy)
                if slot.pool is None:
                    self.refusals.group(
                        (v.NO_STATIC_POOL, target_site, target.name, subnet, version, "failover"),
                        lambda nics, n=target.name, sn=subnet, s=target_site, f=version:
                            v.no_static_pool(n, sn, s, f, nics),
                        slot.label,
                    )
                else:
                    slot.retained = strategy == "retain" and self._covers(slot.pool, version, value)
                    if strategy == "retain" and not slot.retained:
                        self.note(
                            f"VM {vm.name} NIC {nic.name}: retain, but target pool {slot.pool.name} "
                            f"({slot.pool.prefix}) does not cover {c.address}: the address changes"
                        )
                work.slots.append(slot)
        if self.test:
            self._plan_test_nic(work, m_index, mapping, reverse, target, replica_on_dhcp=strategy == "dhcp" or not static)

    def _target_pool(
        self, site: str, network: str, subnet: str, version: int, value: int, strategy: str
    ) -> StaticIpPool | None:
        pools = self._pools(site, network, subnet, version)
        if not pools:
            return None
        if strategy == "retain" and len(pools) > 1:
            for p in pools:
                lo, hi = self._range(p)
                if lo <= value <= hi:
                    return p
        return pools[0]

    def _pools(self, site: str, network: str, subnet: str, version: int) -> list[StaticIpPool]:
        key = (site, network, subnet, version)
        hit = self._pool_cache.get(key)
        if hit is None:
            planned = self._planned_pools.get((site, network, subnet))
            pools = planned if planned is not None else self.idx.pools_by_subnet.get((site, network, subnet), [])
            hit = self._pool_cache[key] = [p for p in pools if p.family == version]
        return hit

    def _range(self, pool: StaticIpPool) -> tuple[int, int]:
        key = (pool.site, pool.name)
        hit = self._ranges.get(key)
        if hit is None:
            hit = self._ranges[key] = (int(ipaddress.ip_address(pool.range_start)), int(ipaddress.ip_address(pool.range_end)))
        return hit

    def _covers(self, pool: StaticIpPool, version: int, value: int) -> bool:
        """Whether ``pool``'s subnet (not just its range) holds the address."""
        key = (pool.site, pool.name)
        hit = self._nets.get(key)
        if hit is None:
            net = pool.network
            hit = self._nets[key] = (net.version, int(net.network_address), int(net.broadcast_address), net.prefixlen)
        return hit[0] == version and hit[1] <= value <= hit[2]

    def _plen(self, pool: StaticIpPool) -> int:
        self._covers(pool, 0, 0)
        return self._nets[(pool.site, pool.name)][3]

    # ---------------------------------------------------------------------- test NICs

    def _test_target(self, m_index: int, mapping: NetworkMapping, reverse: bool, target: VmNetwork) -> _TestTarget:
        key = (m_index, reverse)
        cached = self._test_targets.get(key)
        if cached is not None:
            return cached
        option = mapping.test_network
        site = target.site
        mode = option.mode
        if reverse and mode == "existing":
            self.note(
                f"network_mappings[{m_index}] is used in reverse for {target.name} at {site}; its existing "
                f"test network {option.vm_network} is at the other site, so test VMs are not connected "
                f"(add a mapping from {mapping.target.site}/{mapping.target.vm_network} to choose one)"
            )
            mode = "none"
        result = _TestTarget(mode=mode)
        if mode == "existing":
            net = self.idx.networks.get((site, option.vm_network))
            result.name = option.vm_network
            if net is None:
                self.refusals.add(v.missing_test_network(option.vm_network, site, m_index))
                result.usable = False
            elif not v.is_isolated(net):
                self.refusals.add(v.unisolated_test_network(net.name, site, net.isolation.value, m_index))
                result.usable = False
            else:
                result.network, result.isolation = net, net.isolation
        elif mode == "create":
            name = name_test_network(target.name, self.plan_name)
            result.name, result.isolation = name, Isolation.WNV
            existing = self.idx.networks.get((site, name))
            if existing is not None and not existing.test_network:
                self.refusals.add(v.taken_test_network_name(name, site))
                result.usable = False
            elif existing is not None:
                # Left over from an earlier test of this plan. The change stays in the plan
                # (creating it again is a no-op) so this test's cleanup deletes it too.
                result.network = existing
                self._add_once(CreateTestNetwork(site=site, name=name, copy_of=target.name))
                self.note(f"test network {name} at {site} exists already (from an earlier test): reused")
            else:
                self._plan_test_network(site, name, target)
        self._test_targets[key] = result
        return result

    def _plan_test_network(self, site: str, name: str, target: VmNetwork) -> None:
        """A network to be created copies the target's pools with the same ranges (named like
        the VMM driver names them, ``<test network>/<pool>``), so the failover address is
        normally free there too."""
        self._add_once(CreateTestNetwork(site=site, name=name, copy_of=target.name))
        for pool in self.idx.pools_of_network.get((site, target.name), []):
            copy = pool.model_copy(update={"name": f"{name}/{pool.name}", "vm_network": name})
            self._planned_pools.setdefault((site, name, pool.vm_subnet), []).append(copy)
        self._planned_subnets[(site, name)] = self.idx.subnet_names(site, target)

    def _add_once(self, change: CreateTestNetwork) -> None:
        if change not in self._created:
            self._created.add(change)
            self.changes.append(change)

    def _plan_test_nic(
        self, work: _NicWork, m_index: int, mapping: NetworkMapping, reverse: bool, target: VmNetwork,
        *, replica_on_dhcp: bool,
    ) -> None:
        vm = work.vm
        test = self._test_target(m_index, mapping, reverse, target)
        if test.mode == "none":
            self.note_group(
                ("no-test-network", target.site, target.name),
                lambda items, n=target.name: f"no test network for {n}: the test VM NICs are not connected: {items}",
                work.label,
            )
            return
        if not test.usable:
            return
        if test.isolation == Isolation.WNV:
            probe = v.incompatible_test_network(target=target, test_network=test.name, replica_on_dhcp=replica_on_dhcp, nics=[])
            if probe is not None:
                self.refusals.group(
                    (probe.code, target.site, target.name, test.name),
                    lambda nics, t=target, n=test.name, d=replica_on_dhcp:
                        v.incompatible_test_network(target=t, test_network=n, replica_on_dhcp=d, nics=nics),
                    work.label,
                )
                return
        site = target.site
        if test.network is not None:
            candidates = self.idx.subnet_names(site, test.network)
        else:
            candidates = self._planned_subnets.get((site, test.name), [])
        work.test = test
        work.test_subnet = choose_subnet(candidates, work.target_subnet) or ""
        test_vm = self.idx.vms.get((site, vm.test_vm))
        work.test_nic = test_vm.nic(work.name) if test_vm is not None else None
        for slot in work.slots:
            pools = self._pools(site, test.name, work.test_subnet, slot.version)
            if not pools:
                self.refusals.group(
                    (v.NO_STATIC_POOL, site, test.name, work.test_subnet, slot.version, "test"),
                    lambda nics, n=test.name, sn=work.test_subnet, s=site, f=slot.version:
                        v.no_static_pool(n, sn, s, f, nics, purpose="test"),
                    slot.label,
                )
                continue
            slot.test_pool = pools[0]

    # ---------------------------------------------------------------------- allocation

    def _allocate_failover(self, slots: list[_Slot]) -> None:
        by_pool: dict[tuple[str, str], list[_Slot]] = defaultdict(list)
        pools: dict[tuple[str, str], StaticIpPool] = {}
        for s in slots:
            if s.pool is not None:
                key = (s.pool.site, s.pool.name)
                by_pool[key].append(s)
                pools[key] = s.pool
        for key, group in by_pool.items():
            requests = [
                AddressRequest(s.key, s.nic.replica_nic.id, s.source if s.strategy == "retain" else None)
                for s in group
            ]
            result = allocate(pools[key], requests, self.idx.grants_by_pool.get(key, ()))
            self._apply(pools[key], group, result, test=False)
        self._note_foreign_grants(slots)

    def _allocate_test(self, slots: list[_Slot]) -> None:
        by_pool: dict[tuple[str, str], list[_Slot]] = defaultdict(list)
        pools: dict[tuple[str, str], StaticIpPool] = {}
        for s in slots:
            if s.test_pool is not None:
                key = (s.test_pool.site, s.test_pool.name)
                by_pool[key].append(s)
                pools[key] = s.test_pool
        for key, group in by_pool.items():
            requests = [
                AddressRequest(s.key, s.nic.test_nic.id if s.nic.test_nic else "", s.address) for s in group
            ]
            result = allocate(pools[key], requests, self.idx.grants_by_pool.get(key, ()))
            self._apply(pools[key], group, result, test=True)

    def _apply(self, pool: StaticIpPool, group: list[_Slot], result, *, test: bool) -> None:
        exhausted: list[str] = []
        for s in group:
            a = result.allocations[s.key]
            if a.address is None:
                exhausted.append(s.label)
            elif test:
                s.test_address, s.test_existing = a.address, a.existing
            else:
                s.address, s.existing = a.address, a.existing
        if exhausted:
            self.refusals.add(v.pool_exhausted(pool.name, pool.site, exhausted, "test" if test else "failover"))
        for address, owner in result.unused_grants:
            self.note(
                f"grant {address} in pool {pool.name} at {pool.site} held by NIC {owner} is not needed "
                f"by this plan: left alone"
            )

    def _note_foreign_grants(self, slots: list[_Slot]) -> None:
        # A replica NIC holding grants in a pool the plan does not use (the mapping changed,
        # say): left alone, but worth a line in the review.
        seen: set[str] = set()
        for s in slots:
            nic = s.nic.replica_nic
            if nic.id in seen:
                continue
            seen.add(nic.id)
            used = {(x.pool.site, x.pool.name) for x in s.nic.slots if x.pool is not None}
            for g in self.idx.grants_by_owner.get(nic.id, ()):
                if (g.site, g.pool) not in used:
                    self.note(
                        f"VM {s.nic.vm.name} NIC {s.nic.name} holds grant {g.address} in pool {g.pool} at "
                        f"{g.site}, which this plan does not use: left alone"
                    )

    # --------------------------------------------------------------- subnets and routes

    def _check_subnets(self, slots: list[_Slot]) -> list[WholeSubnet]:
        """Retained addresses: their declared subnet must move whole (every VM at the source
        site with an address in it must be in the plan); an undeclared one is refused."""
        index: PrefixIndex[int] = PrefixIndex()
        for i, sn in enumerate(self.config.subnets):
            index.add(sn.prefix, i)
        moving: dict[int, list[str]] = {}
        undeclared: dict[str, list[str]] = {}
        for s in slots:
            if not s.retained:
                continue
            hit = index.lookup(s.version, s.source_int)
            if hit is None:
                undeclared.setdefault(s.pool.prefix, []).append(f"{s.source} ({s.nic.vm.name}/{s.nic.name})")
            elif not self.config.subnets[hit].stretched:
                vms = moving.setdefault(hit, [])
                if not vms or vms[-1] != s.nic.vm.name:
                    vms.append(s.nic.vm.name)
        for prefix, addresses in undeclared.items():
            self.refusals.add(v.retained_subnet_undeclared(prefix, addresses))
        if not moving:
            return []
        in_plan = {vm.name for vm in self.vms}
        left: dict[int, list[str]] = defaultdict(list)
        for other in self.idx.vms_by_site.get(self.source_site, ()):
            if other.role != "primary" or other.name in in_plan:
                continue
            for nic in other.nics:
                for c in nic.ip_configurations:
                    if c.address is None:
                        continue
                    hit = index.lookup(*_parse(c.address))
                    if hit in moving and (not left[hit] or left[hit][-1] != other.name):
                        left[hit].append(other.name)
        for i in sorted(moving):
            if left.get(i):
                self.refusals.add(v.partial_subnet_failover(
                    self.config.subnets[i].prefix, self.source_site, left[i], sorted(set(moving[i]))
                ))
        return [self.config.subnets[i] for i in sorted(moving)]

    def _route_changes(self, moved: list[WholeSubnet]) -> None:
        src, dst = self.source_site, self.target_site
        for sn in moved:
            withdraw = [_announced(sn.prefix, a) for a in sn.announcements.get(src, [])]
            announce = [_announced(sn.prefix, a) for a in sn.announcements.get(dst, [])]
            for t in sn.third_site_routes:
                if src in t.next_hop_by_site:
                    withdraw.append(Route(router=t.router, prefix=sn.prefix, next_hop=t.next_hop_by_site[src], metric=t.metric))
                if dst in t.next_hop_by_site:
                    announce.append(Route(router=t.router, prefix=sn.prefix, next_hop=t.next_hop_by_site[dst], metric=t.metric))
            # A route wanted at both ends (a third-site router with one next hop for both sites)
            # stays as it is rather than flapping.
            both = {_route_key(r) for r in withdraw} & {_route_key(r) for r in announce}
            withdraw = [r for r in withdraw if _route_key(r) in self.idx.routes and _route_key(r) not in both]
            announce = [r for r in announce if _route_key(r) not in self.idx.routes and _route_key(r) not in both]
            if withdraw or announce:
                self.changes.append(MoveRoute(
                    prefix=sn.prefix, from_site=src, to_site=dst, withdraw=tuple(withdraw), announce=tuple(announce)
                ))
            else:
                self.note(f"subnet {sn.prefix}: routes already point at {dst}")

    # -------------------------------------------------------------------------- changes

    def _failover_changes(self) -> None:
        for vm in self.vms:
            site, host = vm.planned.target_site, vm.planned.target_host
            for nic in vm.nics:
                rn = nic.replica_nic
                if rn.vm_network != nic.target_network or (rn.vm_subnet or "") != nic.target_subnet:
                    self.changes.append(ConnectNic(
                        site=site, vm=vm.name, nic=nic.name, vm_network=nic.target_network,
                        vm_subnet=nic.target_subnet, purpose="failover",
                    ))
                settings = []
                for s in nic.slots:
                    self.changes.append(ReserveIp(
                        site=site, pool=s.pool.name, address=s.address, vm=vm.name, nic=nic.name,
                        nic_id=rn.id, ip_index=s.ip_index, purpose="failover", source_address=s.source,
                        existing=s.existing,
                    ))
                    # model_construct: every value comes canonical from a validated pool or
                    # from the allocator, and validating 30,000 of them again costs ~0.3 s.
                    settings.append(FailoverIpSetting.model_construct(
                        address=s.address, prefix_length=self._plen(s.pool),
                        gateway=s.pool.gateway, dns_servers=s.pool.dns_servers,
                    ))
                if settings:
                    previous = self.idx.failover.get((host, vm.name, nic.name), ())
                    if tuple(settings) != tuple(previous):
                        self.changes.append(SetFailoverIp(
                            site=site, host=host, vm=vm.name, nic=nic.name,
                            settings=tuple(settings), previous=tuple(previous),
                        ))

    def _test_changes(self) -> None:
        # Test changes name the VM itself (``vm``) with purpose "test": they act on its test VM,
        # "<vm> - Test", which the engine derives (it exists only once the test has started).
        for vm in self.vms:
            site = vm.planned.target_site
            for nic in vm.nics:
                if nic.test is None:
                    continue
                addresses = []
                for s in nic.slots:
                    if s.test_address is None:
                        continue
                    self.changes.append(ReserveIp(
                        site=site, pool=s.test_pool.name, address=s.test_address, vm=vm.name, nic=nic.name,
                        # The test VM exists only once the test failover has started; until then
                        # its NIC id is unknown and the engine fills it in before granting.
                        nic_id=nic.test_nic.id if nic.test_nic else "",
                        ip_index=s.ip_index, purpose="test", source_address=s.source, existing=s.test_existing,
                    ))
                    addresses.append((s.test_address, self._plen(s.test_pool)))
                tn = nic.test_nic
                if tn is not None and tn.vm_network == nic.test.name and (tn.vm_subnet or "") == nic.test_subnet and (
                    tuple((c.address, c.prefix_length) for c in tn.ip_configurations if c.mode == "static")
                    == tuple(addresses)
                ):
                    continue
                self.changes.append(ConnectNic(
                    site=site, vm=vm.name, nic=nic.name, vm_network=nic.test.name,
                    vm_subnet=nic.test_subnet, purpose="test", addresses=tuple(addresses),
                ))

    # ------------------------------------------------------------------------------ DNS

    def _dns_changes(self) -> None:
        dns_cfg = self.config.dns
        purpose = "test" if self.test else "production"
        servers = {s.name: s for s in dns_cfg.servers}
        zones: dict[str, str] = {}
        for z in dns_cfg.zones:
            server = servers.get(z.server)
            if server is not None and server.purpose == purpose:
                zones.setdefault(z.name, z.server)
        if self.test and not any(s.purpose == "test" for s in dns_cfg.servers):
            self.note("no DNS server with purpose 'test' is configured: test DNS is not updated")
            return
        zone_of = _Zones(zones)
        ttl = dns_cfg.ttl.failover_ttl
        change_purpose = "test" if self.test else "failover"
        ptr_wanted: dict[str, list] = {}
        forward_done: set[tuple[str, RecordType]] = set()
        for vm in self.vms:
            pairs = []  # (old, new) per static IP configuration that gets an address
            for nic in vm.nics:
                for s in nic.slots:
                    new = s.test_address if self.test else s.address
                    if new is not None:
                        pairs.append((s.version, s.source, new))
            if not any(old != new for _, old, new in pairs):
                continue
            if vm.planned.self_registering:
                self.note_group(("self-registering",), lambda items: f"VMs that register themselves in DNS, "
                                                                      f"records left alone: {items}", vm.name)
                continue
            name = host_name(self.config, vm.name)
            if name is None:
                self.note_group(("no-hostname",), lambda items: f"no host name (set dns.default_domain or "
                                                                 f"dns.hostnames), DNS not updated: {items}", vm.name)
                continue
            zone = zone_of(name)
            if zone is None:
                self.note_group(("no-zone",), lambda items: f"names in no configured {purpose} DNS zone, DNS "
                                                             f"not updated: {items}", f"{name} ({vm.name})")
            else:
                for version, rtype in ((4, RecordType.A), (6, RecordType.AAAA)):
                    fam = [(old, new) for ver, old, new in pairs if ver == version]
                    if not any(old != new for old, new in fam) or (name, rtype) in forward_done:
                        continue
                    forward_done.add((name, rtype))
                    current = self.idx.records.get((zone, name, rtype))
                    old_values = tuple(sorted(current.values)) if current else ()
                    new_values = tuple(sorted({new for _, new in fam}))
                    if set(old_values) == set(new_values) and current is not None and current.ttl == ttl:
                        continue
                    self.changes.append(DnsChange(
                        server=zones[zone], zone=zone, name=name, type=rtype, ttl=ttl,
                        old_values=old_values, new_values=new_values, vm=vm.name,
                        purpose=change_purpose, old_ttl=current.ttl if current else None,
                    ))
            for _, old, new in pairs:
                if old == new:
                    continue
                old_ptr = ptr_name(old)
                ptr_wanted.setdefault(old_ptr, [vm.name, set(), set()])[2].add(name)
                ptr_wanted.setdefault(ptr_name(new), [vm.name, set(), set()])[1].add(name)
        self._ptr_changes(ptr_wanted, zone_of, ttl, change_purpose)

    def _ptr_changes(self, wanted: dict[str, list], zone_of: _Zones, ttl: int, purpose: str) -> None:
        """One change per PTR name: add the host names that move in, drop the ones that move
        out, leave foreign values alone."""
        for ptr, (vm, add, drop) in wanted.items():
            zone = zone_of(ptr)
            if zone is None:
                if add:
                    self.note_group(("no-reverse-zone",), lambda items: f"no reverse zone configured, PTR not "
                                                                         f"added: {items}", f"{ptr} ({vm})")
                continue
            current = self.idx.records.get((zone, ptr, RecordType.PTR))
            old_values = tuple(sorted(current.values)) if current else ()
            new_values = tuple(sorted((set(old_values) - (drop - add)) | add))
            if set(old_values) == set(new_values) and (not add or current.ttl == ttl):
                continue
            self.changes.append(DnsChange(
                server=zone_of.zones[zone], zone=zone, name=ptr, type=RecordType.PTR, ttl=ttl,
                old_values=old_values, new_values=new_values, vm=vm, purpose=purpose,
                old_ttl=current.ttl if current else None,
            ))


# -------------------------------------------------------------------------------- helpers


_parse = to_int


def _announced(prefix: str, a) -> Route:
    return Route(router=a.router, prefix=prefix, next_hop=a.next_hop, interface=a.interface, metric=a.metric)


class _Zones:
    """Longest-match zone lookup with a cache per parent name (the names of one plan share few
    parents: one domain, a few reverse /24s)."""

    __slots__ = ("zones", "_cache")

    def __init__(self, zones: dict[str, str]) -> None:
        self.zones = zones
        self._cache: dict[str, str | None] = {}

    def __call__(self, name: str) -> str | None:
        if name in self.zones:
            return name
        parent = name.split(".", 1)[1] if "." in name.rstrip(".") else "."
        hit = self._cache.get(parent, _MISSING)
        if hit is _MISSING:
            hit = self._cache[parent] = self._walk(parent)
        return hit

    def _walk(self, name: str) -> str | None:
        labels = name.rstrip(".").split(".") if name != "." else []
        for i in range(len(labels)):
            candidate = ".".join(labels[i:]) + "."
            if candidate in self.zones:
                return candidate
        return "." if "." in self.zones else None


_MISSING = object()


def ptr_name(address: str) -> str:
    """The reverse-lookup name of an address, as ``dns.reversename.from_address`` gives it
    (the tests hold the two equal); built by hand because dnspython's costs ~40 us a name."""
    if ":" not in address:
        return ".".join(reversed(address.split("."))) + ".in-addr.arpa."
    value = to_int(address)[1]
    if value >> 32 == 0xFFFF:  # IPv4-mapped: dnspython answers with the IPv4 name
        return ".".join(str(b) for b in reversed(value.to_bytes(16, "big")[12:])) + ".in-addr.arpa."
    return ".".join(reversed(f"{value:032x}")) + ".ip6.arpa."
