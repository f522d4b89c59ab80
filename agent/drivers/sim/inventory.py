"""The simulated world's inventory: a YAML file that describes every site, network, VM, DNS zone
and router, so any topology is built without code.

Shape (every key is checked; unknown keys are errors)::

    sites:
      - name: site-a
        hosts: [hv-a1, {name: hv-a2, max_failover_ips_per_family: 1}]
        logical_networks: [ln-prod]
        vm_networks:
          - name: prod-a
            logical_network: ln-prod
            isolation: VLANNetwork            # NoIsolation | VLANNetwork | WindowsNetworkVirtualization
            subnets:
              - name: web
                prefix: 192.168.1.0/24
                vlan_id: 10
                pools:
                  - name: pool-a-web
                    range: [192.168.1.10, 192.168.1.200]
                    reserved: [192.168.1.100]
                    gateway: 192.168.1.1
                    dns_servers: [192.168.1.2]
                    grants: [{address: 192.168.1.150, owner_id: printer-1, owner_type: None}]
        vms:
          - name: web01
            host: hv-a1
            nics:
              - {name: nic0, vm_network: prod-a, vm_subnet: web, addresses: [192.168.1.10/24]}
            replica:
              site: site-b
              host: hv-b1
              nics: [{name: nic0, vm_network: prod-b}]   # optional: connected replica NICs
    dns_servers:
      - name: dns-a
        zones:
          - name: example.com
            records: [{name: web01, type: A, ttl: 300, values: [192.168.1.10]}]
    routers:
      - name: rtr-a
        site: site-a
        routes: [{prefix: 192.168.1.0/24, next_hop: 10.0.0.1}]
    simulation:
      seed: 7
      latency: {scale: 1.0, calls: {"vmm.*": {fixed: 0.2, per_item: 0.01}}}
      faults: [{call: vmm.grant_ips, target: pool-b-web, fault: permanent, count: 1}]

Derived, not written: each NIC's id (``uuid5`` of site/vm/nic unless ``id`` is given), each
replicated VM's replica at its replica site (role ``replica``, Off, same NIC names, NICs
unconnected unless ``replica.nics`` says otherwise, no IP configuration), and a grant owned by
the NIC for every static NIC address that lies in a pool of the NIC's network (VMM handed it out).

Refused, each problem with its line and key, all reported at once: duplicate names (sites,
hosts, logical and VM networks, subnets, pools of a site, VMs of a site, NICs, zones, record
sets, routers); unknown references (logical network, VM network, subnet, host, replica site and
host, a grant's owner NIC, a router's site); a pool whose prefix is not a subnet of its VM
subnet, whose range leaves its prefix or whose reserved addresses leave its range; pools of one
family on one logical network at one site whose ranges overlap (the message names both) -- pools
of different Windows Network Virtualization networks have address spaces of their own; a NIC address
outside its VM subnet, in a pool's reserved set, used twice on one VM network, or granted to
someone else; a grant outside its pool's range or in its reserved set; malformed record values
and failover settings.
"""

from __future__ import annotations

import ipaddress
import socket
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.domain.model import Address, FailoverIpSetting, Isolation, PowerState, Prefix, RecordType
from agent.drivers.sim.faults import SimulationSpec
from agent.yamlfile import load_model

INVENTORY_PROBLEMS_MARK = "inventory cross-reference problems:\n"
"""Prefix of the ValueError that carries every cross-reference problem, one ``key: message``
per line, so ``load_model`` locates each one by line."""

NIC_ID_NAMESPACE = uuid.UUID("6f1f5c1e-3b8a-4d5e-9a57-0c2f1d6b7e41")


def nic_id(site: str, vm: str, nic: str) -> str:
    """The deterministic id the simulator gives a NIC the inventory names no id for."""

    return str(uuid.uuid5(NIC_ID_NAMESPACE, f"{site}/{vm}/{nic}"))


def ip_int(text: str) -> tuple[int, int]:
    """``(family, integer)`` of an address; ``ValueError`` if it is none. The socket functions
    do in microseconds what ``ipaddress`` does in tens, which counts at 30,000 addresses."""

    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        pass
    try:
        return 6, int(ipaddress.IPv6Address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


@lru_cache(maxsize=4096)
def prefix_int(prefix: str) -> tuple[int, int, int]:
    """``(family, network integer, prefix length)`` of a canonical prefix."""

    net = ipaddress.ip_network(prefix)
    return net.version, int(net.network_address), net.prefixlen


def in_prefix(family: int, value: int, prefix: str) -> bool:
    pf, base, plen = prefix_int(prefix)
    bits = 32 if pf == 4 else 128
    return family == pf and (value >> (bits - plen)) == (base >> (bits - plen))


def _interface(value: str) -> str:
    address, slash, length = value.strip().partition("/")
    if not slash:
        raise ValueError(f"{value!r} needs a prefix length, e.g. {address}/24")
    family, number = ip_int(address)
    if not length.isdigit() or not 0 <= int(length) <= (32 if family == 4 else 128):
        raise ValueError(f"{value!r}: prefix length {length!r} is out of range for IPv{family}")
    text = socket.inet_ntop(socket.AF_INET, number.to_bytes(4, "big")) if family == 4 else str(ipaddress.IPv6Address(number))
    return f"{text}/{int(length)}"


def split_interface(value: str) -> tuple[str, int]:
    """``"192.168.1.10/24"`` (already validated) -> ``("192.168.1.10", 24)``."""

    address, _, length = value.partition("/")
    return address, int(length)


Interface = Annotated[str, AfterValidator(_interface)]
"""An address with its prefix length, ``192.168.1.10/24``."""

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._\-]*$")]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------- VMM


class GrantSpec(Spec):
    """An address already granted from the pool: to a NIC of a VM at this site (``owner:
    vm/nic``) or to an outside object (``owner_id``)."""

    address: Address
    owner: str | None = None
    owner_id: str | None = None
    owner_type: Literal["VirtualNetworkAdapter", "VirtualMachine", "None"] = "VirtualNetworkAdapter"
    description: str = ""

    @model_validator(mode="after")
    def _one_owner(self) -> GrantSpec:
        if (self.owner is None) == (self.owner_id is None):
            raise ValueError("give exactly one of owner (vm/nic at this site) or owner_id")
        return self


class PoolSpec(Spec):
    name: Name
    prefix: Prefix | None = None
    """The pool's subnet (``-Subnet``); default: its VM subnet's prefix."""
    range: tuple[Address, Address]
    """First and last allocatable address."""
    reserved: list[Address] = Field(default_factory=list)
    gateway: Address | None = None
    dns_servers: list[Address] = Field(default_factory=list)
    dns_suffix: str | None = None
    grants: list[GrantSpec] = Field(default_factory=list)


class SubnetSpec(Spec):
    name: Name
    prefix: Prefix
    vlan_id: int | None = Field(default=None, ge=0, le=4094)
    supports_dhcp: bool = False
    pools: list[PoolSpec] = Field(default_factory=list)


class VmNetworkSpec(Spec):
    name: Name
    logical_network: Name
    isolation: Isolation
    subnets: list[SubnetSpec] = Field(default_factory=list)
    description: str = ""


class NicSpec(Spec):
    name: Name
    id: str | None = None
    vm_network: Name | None = None
    vm_subnet: Name | None = None
    """Default: the network's first subnet."""
    addresses: list[Interface] = Field(default_factory=list)
    """Static IP configurations, ``address/prefix-length``, primary first."""
    dhcp: bool = False

    @model_validator(mode="after")
    def _connected_for_addresses(self) -> NicSpec:
        if self.vm_network is None and (self.addresses or self.dhcp or self.vm_subnet):
            raise ValueError("a NIC with addresses, dhcp or vm_subnet needs vm_network")
        return self


class ReplicaNicSpec(Spec):
    """How a replica NIC starts out: connected to a network at the replica site, and failover
    IP settings already stored on it."""

    name: Name
    vm_network: Name | None = None
    vm_subnet: Name | None = None
    failover: list[FailoverIpSetting] = Field(default_factory=list)


class ReplicaSpec(Spec):
    site: Name
    host: Name
    nics: list[ReplicaNicSpec] = Field(default_factory=list)


class VmSpec(Spec):
    name: Name
    host: Name
    power: PowerState = PowerState.RUNNING
    nics: list[NicSpec] = Field(default_factory=list)
    replica: ReplicaSpec | None = None


class HostSpec(Spec):
    name: Name
    max_failover_ips_per_family: int | None = Field(default=None, ge=1)
    """How many failover addresses of one family a NIC may carry (the PowerShell cmdlet sets one;
    the WMI method takes arrays). Default: no limit."""


class SiteSpec(Spec):
    name: Name
    hosts: list[HostSpec] = Field(default_factory=list)
    logical_networks: list[Name] = Field(default_factory=list)
    vm_networks: list[VmNetworkSpec] = Field(default_factory=list)
    vms: list[VmSpec] = Field(default_factory=list)

    @field_validator("hosts", mode="before")
    @classmethod
    def _host_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


# ----------------------------------------------------------------------- DNS and routers


class RecordSpec(Spec):
    name: str = Field(min_length=1)
    """Relative to the zone (``web01``), ``@`` for the apex, or fully qualified (trailing dot)."""
    type: RecordType
    ttl: int = Field(default=3600, ge=0)
    values: list[str] = Field(min_length=1)


class ZoneSpec(Spec):
    name: str = Field(min_length=1)
    records: list[RecordSpec] = Field(default_factory=list)


class DnsServerSpec(Spec):
    name: Name
    zones: list[ZoneSpec] = Field(default_factory=list)


class RouteSpec(Spec):
    prefix: Prefix
    next_hop: Address | None = None
    interface: str | None = None
    metric: int = Field(default=256, ge=0, le=65535)

    @model_validator(mode="after")
    def _has_target(self) -> RouteSpec:
        if self.next_hop is None and self.interface is None:
            raise ValueError("a route needs next_hop or interface")
        return self


class RouterSpec(Spec):
    name: Name
    site: Name
    routes: list[RouteSpec] = Field(default_factory=list)


# ---------------------------------------------------------------------------- the whole


def fqdn(name: str) -> str:
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def record_fqdn(name: str, zone: str) -> str:
    """``web01`` in ``example.com.`` -> ``web01.example.com.``; ``@`` -> the zone; absolute kept."""

    name = name.strip().lower()
    if name == "@":
        return zone
    return name if name.endswith(".") else f"{name}.{zone}"


def in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def canonical_value(rtype: str, value: str) -> str:
    """The canonical text of one record value; ``ValueError`` when it is not valid for the type."""

    if rtype == "A":
        return str(ipaddress.IPv4Address(value.strip()))
    if rtype == "AAAA":
        return str(ipaddress.IPv6Address(value.strip()))
    target = value.strip().lower()
    if not target.endswith(".") or target == ".":
        raise ValueError(f"PTR target {value!r} must be a fully qualified name (ending with '.')")
    return target


class SimInventory(Spec):
    """The whole simulated world, as written in the inventory YAML."""

    sites: list[SiteSpec] = Field(min_length=1)
    dns_servers: list[DnsServerSpec] = Field(default_factory=list)
    routers: list[RouterSpec] = Field(default_factory=list)
    simulation: SimulationSpec = SimulationSpec()

    @model_validator(mode="after")
    def _cross_references(self) -> SimInventory:
        problems = _Checker(self).run()
        if problems:
            # One ValueError carrying every problem; load_model splits it into located problems.
            raise ValueError(INVENTORY_PROBLEMS_MARK + "\n".join(problems))
        return self


def load_inventory(path: Path | str) -> SimInventory:
    """Parse and check an inventory file; ``InvalidFileError`` lists every problem with its line."""

    return load_model(path, SimInventory, cross_mark=INVENTORY_PROBLEMS_MARK)


def _dupes(names: list[str]) -> list[int]:
    seen: set[str] = set()
    out = []
    for i, n in enumerate(names):
        if n in seen:
            out.append(i)
        seen.add(n)
    return out


class _Checker:
    """Every cross-reference rule of the inventory, collected as ``key.path: message`` lines."""

    def __init__(self, inv: SimInventory) -> None:
        self.inv = inv
        self.problems: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def run(self) -> list[str]:
        inv = self.inv
        for i in _dupes([s.name for s in inv.sites]):
            self.add(f"sites[{i}].name", f"duplicate site name {inv.sites[i].name!r}")
        host_site: dict[str, str] = {}
        for i, site in enumerate(inv.sites):
            for j, host in enumerate(site.hosts):
                if host.name in host_site:
                    self.add(
                        f"sites[{i}].hosts[{j}]", f"host {host.name!r} is already declared at site {host_site[host.name]}"
                    )
                host_site.setdefault(host.name, site.name)
        sites = {s.name: s for s in inv.sites}
        for i, site in enumerate(inv.sites):
            self._site(i, site)
        self._replicas(sites)
        self._dns()
        for i in _dupes([r.name for r in inv.routers]):
            self.add(f"routers[{i}].name", f"duplicate router name {inv.routers[i].name!r}")
        for i, router in enumerate(inv.routers):
            if router.site not in sites:
                self.add(f"routers[{i}].site", f"unknown site {router.site!r}")
            for j in _dupes([r.prefix for r in router.routes]):
                self.add(f"routers[{i}].routes[{j}].prefix", f"{router.routes[j].prefix} is routed twice on {router.name}")
        return self.problems

    # -- one site

    def _site(self, i: int, site: SiteSpec) -> None:
        at = f"sites[{i}]"
        hosts = {h.name for h in site.hosts}
        for j in _dupes(list(site.logical_networks)):
            self.add(f"{at}.logical_networks[{j}]", f"duplicate logical network {site.logical_networks[j]!r}")
        for j in _dupes([n.name for n in site.vm_networks]):
            self.add(f"{at}.vm_networks[{j}].name", f"duplicate VM network name {site.vm_networks[j].name!r}")
        pool_names: list[tuple[str, str]] = []
        pools: list[tuple[str, PoolSpec, ipaddress.IPv4Network | ipaddress.IPv6Network, str, str]] = []
        space: dict[str, str] = {}
        for j, net in enumerate(site.vm_networks):
            nat = f"{at}.vm_networks[{j}]"
            if net.logical_network not in site.logical_networks:
                self.add(f"{nat}.logical_network", f"unknown logical network {net.logical_network!r} at {site.name}")
            for k in _dupes([s.name for s in net.subnets]):
                self.add(f"{nat}.subnets[{k}].name", f"duplicate VM subnet name {net.subnets[k].name!r}")
            for k, sub in enumerate(net.subnets):
                sub_net = ipaddress.ip_network(sub.prefix)
                for m, pool in enumerate(sub.pools):
                    pat = f"{nat}.subnets[{k}].pools[{m}]"
                    pool_names.append((pat, pool.name))
                    pool_net = ipaddress.ip_network(pool.prefix or sub.prefix)
                    if pool_net.version != sub_net.version or not pool_net.subnet_of(sub_net):  # type: ignore[arg-type]
                        self.add(f"{pat}.prefix", f"{pool_net} is not a subnet of VM subnet {sub.name} ({sub_net})")
                        continue
                    if self._pool(pat, pool, pool_net):
                        pools.append((pat, pool, pool_net, net.name, sub.name))
                        # WNV networks each have their own address space; the others share their
                        # logical network's (an isolated drill network on a logical network of its
                        # own may reuse the production subnet, as VMM allows).
                        space[pat] = f"wnv:{net.name}" if net.isolation == Isolation.WNV else f"ln:{net.logical_network}"
        seen: dict[str, str] = {}
        for pat, name in pool_names:
            if name in seen:
                self.add(f"{pat}.name", f"duplicate pool name {name!r} at {site.name} (also at {seen[name]})")
            seen.setdefault(name, pat)
        self._overlaps(pools, space)
        nics = self._vms(at, site, hosts)
        self._grants(at, site, pools, nics)

    def _pool(self, pat: str, pool: PoolSpec, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        """Checks one pool; False when its range is unusable for the overlap and grant checks."""
        start, end = (ipaddress.ip_address(a) for a in pool.range)
        if start not in net or end not in net:
            self.add(f"{pat}.range", f"range {start}-{end} is not inside {net}")
            return False
        if int(start) > int(end):
            self.add(f"{pat}.range", f"range start {start} is after range end {end}")
            return False
        for r, addr in enumerate(pool.reserved):
            ip = ipaddress.ip_address(addr)
            if ip.version != start.version or not int(start) <= int(ip) <= int(end):
                self.add(f"{pat}.reserved[{r}]", f"{addr} is not in the pool's range {start}-{end}")
        if pool.gateway is not None and ipaddress.ip_address(pool.gateway) not in net:
            self.add(f"{pat}.gateway", f"gateway {pool.gateway} is not in {net}")
        return True

    def _overlaps(self, pools: list[tuple[str, PoolSpec, Any, str, str]], space: dict[str, str]) -> None:
        spans = sorted(
            (
                (int(ipaddress.ip_address(p.range[0])), int(ipaddress.ip_address(p.range[1])), (net.version, space[pat]), pat, p)
                for pat, p, net, _, _ in pools
            ),
            key=lambda t: (t[2], t[0]),
        )
        # Sorted by start: a pool overlaps an earlier one iff it starts before the furthest end so far.
        furthest: dict[tuple[int, str], tuple[int, str, PoolSpec]] = {}
        for start, end, family, pat, pool in spans:
            prev = furthest.get(family)
            if prev is not None and start <= prev[0]:
                other = prev[2]
                self.add(
                    f"{pat}.range",
                    f"pool {pool.name} ({pool.range[0]}-{pool.range[1]}) overlaps pool {other.name} "
                    f"({other.range[0]}-{other.range[1]}) at the same site",
                )
            if prev is None or end > prev[0]:
                furthest[family] = (end, pat, pool)

    def _vms(self, at: str, site: SiteSpec, hosts: set[str]) -> dict[str, tuple[str, NicSpec]]:
        """Checks the VMs of one site; returns ``"vm/nic" -> (key path, NIC)``."""

        nets = {n.name: n for n in site.vm_networks}
        nics: dict[str, tuple[str, NicSpec]] = {}
        used: dict[tuple[str, str], str] = {}
        for j in _dupes([v.name for v in site.vms]):
            self.add(f"{at}.vms[{j}].name", f"duplicate VM name {site.vms[j].name!r} at {site.name}")
        for j, vm in enumerate(site.vms):
            vat = f"{at}.vms[{j}]"
            if vm.host not in hosts:
                self.add(f"{vat}.host", f"unknown host {vm.host!r} at {site.name}")
            for k in _dupes([n.name for n in vm.nics]):
                self.add(f"{vat}.nics[{k}].name", f"duplicate NIC name {vm.nics[k].name!r} on {vm.name}")
            for k, nic in enumerate(vm.nics):
                nat = f"{vat}.nics[{k}]"
                nics[f"{vm.name}/{nic.name}"] = (nat, nic)
                if nic.vm_network is None:
                    continue
                net = nets.get(nic.vm_network)
                if net is None:
                    self.add(f"{nat}.vm_network", f"unknown VM network {nic.vm_network!r} at {site.name}")
                    continue
                sub = _subnet(net, nic.vm_subnet)
                if sub is None:
                    if nic.vm_subnet is not None:
                        self.add(f"{nat}.vm_subnet", f"VM network {net.name} has no subnet {nic.vm_subnet!r}")
                    elif nic.addresses:
                        self.add(f"{nat}.vm_network", f"VM network {net.name} has no subnet for static addresses")
                    continue
                for m, iface in enumerate(nic.addresses):
                    self._nic_address(f"{nat}.addresses[{m}]", iface, sub, net.name, vm.name, nic.name, used)
        ids: dict[str, str] = {}
        for key, (nat, nic) in nics.items():
            if nic.id is not None:
                if nic.id in ids:
                    self.add(f"{nat}.id", f"NIC id {nic.id} is also the id of {ids[nic.id]}")
                ids.setdefault(nic.id, key)
        return nics

    def _nic_address(
        self, key: str, iface: str, sub: SubnetSpec, net: str, vm: str, nic: str, used: dict[tuple[str, str], str]
    ) -> None:
        address, _ = split_interface(iface)
        family, number = ip_int(address)
        if family == prefix_int(sub.prefix)[0] and not in_prefix(family, number, sub.prefix):
            self.add(key, f"{address} is not in VM subnet {sub.name} ({sub.prefix})")
            return
        for pool in sub.pools:
            if address in pool.reserved:
                self.add(key, f"{address} is in the reserved set of pool {pool.name}")
                return
        where = (net, address)
        if where in used:
            self.add(key, f"{address} is already the address of {used[where]} on VM network {net}")
        used.setdefault(where, f"{vm}/{nic}")

    def _grants(self, at: str, site: SiteSpec, pools: list[tuple[str, PoolSpec, Any, str, str]], nics: dict) -> None:
        by_network: dict[str, list[tuple[str, str, int, str]]] = {}
        for key, (nat, nic) in nics.items():
            if nic.vm_network is not None:
                for m, iface in enumerate(nic.addresses):
                    by_network.setdefault(nic.vm_network, []).append((key, nat, m, split_interface(iface)[0]))
        for pat, pool, _, net_name, sub_name in pools:
            start, end = (int(ipaddress.ip_address(a)) for a in pool.range)
            family = ipaddress.ip_address(pool.range[0]).version
            taken: dict[str, str] = {}
            for g, grant in enumerate(pool.grants):
                gat = f"{pat}.grants[{g}]"
                ip = ipaddress.ip_address(grant.address)
                if ip.version != family or not start <= int(ip) <= end:
                    self.add(f"{gat}.address", f"{ip} is not in the range of pool {pool.name}")
                    continue
                if grant.address in pool.reserved:
                    self.add(f"{gat}.address", f"{ip} is in the reserved set of pool {pool.name}")
                    continue
                owner = grant.owner or grant.owner_id or ""
                if grant.owner is not None and grant.owner not in nics:
                    self.add(f"{gat}.owner", f"no NIC {grant.owner!r} (vm/nic) at {site.name}")
                if grant.address in taken:
                    self.add(f"{gat}.address", f"{ip} is granted twice in pool {pool.name}")
                taken.setdefault(grant.address, owner)
            # Static NIC addresses in the pool are granted to their NIC; a grant to someone else clashes.
            for key, nat, m, addr in by_network.get(net_name, ()) if taken else ():
                holder = taken.get(addr)
                if holder is not None and holder != key:
                    self.add(f"{nat}.addresses[{m}]", f"{addr} is granted to {holder} in pool {pool.name}")

    # -- replicas

    def _replicas(self, sites: dict[str, SiteSpec]) -> None:
        vm_names: dict[tuple[str, str], str] = {}
        for i, site in enumerate(self.inv.sites):
            for j, vm in enumerate(site.vms):
                vm_names[(site.name, vm.name)] = f"sites[{i}].vms[{j}]"
        replicated: dict[str, str] = {}
        for i, site in enumerate(self.inv.sites):
            for j, vm in enumerate(site.vms):
                if vm.replica is None:
                    continue
                rat = f"sites[{i}].vms[{j}].replica"
                rep = vm.replica
                if vm.name in replicated:
                    self.add(f"{rat}", f"VM name {vm.name!r} is already replicated from {replicated[vm.name]}")
                replicated.setdefault(vm.name, site.name)
                target = sites.get(rep.site)
                if target is None:
                    self.add(f"{rat}.site", f"unknown site {rep.site!r}")
                    continue
                if rep.site == site.name:
                    self.add(f"{rat}.site", "the replica site must differ from the VM's own site")
                    continue
                if rep.host not in {h.name for h in target.hosts}:
                    self.add(f"{rat}.host", f"unknown host {rep.host!r} at {rep.site}")
                if (rep.site, vm.name) in vm_names:
                    self.add(f"{rat}.site", f"{rep.site} already has a VM named {vm.name!r} ({vm_names[(rep.site, vm.name)]})")
                own = {n.name for n in vm.nics}
                nets = {n.name: n for n in target.vm_networks}
                for k in _dupes([n.name for n in rep.nics]):
                    self.add(f"{rat}.nics[{k}].name", f"duplicate replica NIC {rep.nics[k].name!r}")
                for k, rnic in enumerate(rep.nics):
                    nat = f"{rat}.nics[{k}]"
                    if rnic.name not in own:
                        self.add(f"{nat}.name", f"{vm.name} has no NIC {rnic.name!r}")
                    if rnic.vm_network is None:
                        if rnic.vm_subnet is not None:
                            self.add(f"{nat}.vm_subnet", "vm_subnet needs vm_network")
                        continue
                    net = nets.get(rnic.vm_network)
                    if net is None:
                        self.add(f"{nat}.vm_network", f"unknown VM network {rnic.vm_network!r} at {rep.site}")
                    elif rnic.vm_subnet is not None and net.subnets and _subnet(net, rnic.vm_subnet) is None:
                        self.add(f"{nat}.vm_subnet", f"VM network {net.name} has no subnet {rnic.vm_subnet!r}")
                    for m, setting in enumerate(rnic.failover):
                        problem = failover_setting_problem(setting)
                        if problem:
                            self.add(f"{nat}.failover[{m}]", problem)

    # -- DNS

    def _dns(self) -> None:
        servers = self.inv.dns_servers
        for i in _dupes([s.name for s in servers]):
            self.add(f"dns_servers[{i}].name", f"duplicate DNS server name {servers[i].name!r}")
        for i, server in enumerate(servers):
            for j in _dupes([fqdn(z.name) for z in server.zones]):
                self.add(f"dns_servers[{i}].zones[{j}].name", f"duplicate zone {server.zones[j].name!r}")
            for j, zone in enumerate(server.zones):
                zname = fqdn(zone.name)
                seen: set[tuple[str, str]] = set()
                for k, rec in enumerate(zone.records):
                    rat = f"dns_servers[{i}].zones[{j}].records[{k}]"
                    name = record_fqdn(rec.name, zname)
                    if not in_zone(name, zname):
                        self.add(f"{rat}.name", f"{name} is not in zone {zname}")
                    if (name, rec.type.value) in seen:
                        self.add(f"{rat}.name", f"duplicate record set {name} {rec.type.value} (list all values in one)")
                    seen.add((name, rec.type.value))
                    for m, value in enumerate(rec.values):
                        try:
                            canonical_value(rec.type.value, value)
                        except ValueError as exc:
                            self.add(f"{rat}.values[{m}]", f"not a valid {rec.type.value} value: {exc}")


def _subnet(net: VmNetworkSpec, name: str | None) -> SubnetSpec | None:
    if name is None:
        return net.subnets[0] if net.subnets else None
    return next((s for s in net.subnets if s.name == name), None)


def failover_setting_problem(setting: FailoverIpSetting) -> str | None:
    """Why Hyper-V would reject one failover IP setting, or None."""

    ip = ipaddress.ip_address(setting.address)
    top = 32 if ip.version == 4 else 128
    if not 1 <= setting.prefix_length <= top:
        return f"prefix length {setting.prefix_length} is out of range for IPv{ip.version} (1-{top})"
    if setting.gateway is not None:
        gw = ipaddress.ip_address(setting.gateway)
        if gw.version != ip.version:
            return f"gateway {gw} is not IPv{ip.version} like address {ip}"
        if gw == ip:
            return f"gateway {gw} is the address itself"
    for dns in setting.dns_servers:
        if ipaddress.ip_address(dns).version != ip.version:
            return f"DNS server {dns} is not IPv{ip.version} like address {ip}"
    return None
