"""The inventory's cross-reference rules: what no single entry can check on its own.

Duplicate names, references to sites, hosts, networks, subnets and NICs, pools that leave their
subnet or overlap, addresses and grants that clash, replicas and record sets. Every problem is
collected as a ``key.path: message`` line, so a file with ten mistakes is fixed in one round.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from agent.domain.matching import fold
from agent.domain.model import Isolation
from agent.drivers.sim.addresses import failover_setting_problem, in_prefix, ip_int, prefix_int, split_interface
from agent.drivers.sim.dnsnames import canonical_value, fqdn, in_zone, record_fqdn
from agent.drivers.sim.specs import NicSpec, PoolSpec, SiteSpec, SubnetSpec, VmNetworkSpec

if TYPE_CHECKING:
    from agent.drivers.sim.inventory import SimInventory


def cross_reference_problems(inv: SimInventory) -> list[str]:
    """Every cross-reference problem of ``inv``, one ``key.path: message`` line each."""

    return _Checker(inv).run()


def _dupes(names: list[str]) -> list[int]:
    # Folded: VMM tells names apart without regard to case, so 'SQL01' repeats 'sql01'.
    seen: set[str] = set()
    out = []
    for i, n in enumerate(names):
        if fold(n) in seen:
            out.append(i)
        seen.add(fold(n))
    return out


class _Checker:
    """Every cross-reference rule of the inventory, collected as ``key.path: message`` lines."""

    def __init__(self, inv: SimInventory) -> None:
        self.inv = inv
        self.problems: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def unique(
        self,
        at: str,
        names: list[str],
        what: str,
        where: str = "",
        *,
        field: str = ".name",
        shown: list[str] | None = None,
    ) -> None:
        """Reports each of ``names`` that repeats an earlier one, at ``at[index]field``:
        ``duplicate <what> '<name>'<where>``. ``shown``: the names as written, when ``names``
        are the compared (canonical) forms."""

        for i in _dupes(names):
            self.add(f"{at}[{i}]{field}", f"duplicate {what} {(shown or names)[i]!r}{where}")

    def run(self) -> list[str]:
        inv = self.inv
        self.unique("sites", [s.name for s in inv.sites], "site name")
        host_site: dict[str, str] = {}
        for i, site in enumerate(inv.sites):
            for j, host in enumerate(site.hosts):
                if host.name in host_site:
                    self.add(
                        f"sites[{i}].hosts[{j}]",
                        f"host {host.name!r} is already declared at site {host_site[host.name]}",
                    )
                host_site.setdefault(host.name, site.name)
        sites = {s.name: s for s in inv.sites}
        for i, site in enumerate(inv.sites):
            self._site(i, site)
        self._replicas(sites)
        self._dns()
        self.unique("routers", [r.name for r in inv.routers], "router name")
        for i, router in enumerate(inv.routers):
            if router.site not in sites:
                self.add(f"routers[{i}].site", f"unknown site {router.site!r}")
            for j in _dupes([r.prefix for r in router.routes]):
                self.add(
                    f"routers[{i}].routes[{j}].prefix", f"{router.routes[j].prefix} is routed twice on {router.name}"
                )
        return self.problems

    # -- one site

    def _site(self, i: int, site: SiteSpec) -> None:
        at = f"sites[{i}]"
        hosts = {h.name for h in site.hosts}
        self.unique(f"{at}.logical_networks", list(site.logical_networks), "logical network", field="")
        self.unique(f"{at}.vm_networks", [n.name for n in site.vm_networks], "VM network name")
        pool_names: list[tuple[str, str]] = []
        pools: list[tuple[str, PoolSpec, ipaddress.IPv4Network | ipaddress.IPv6Network, str, str]] = []
        space: dict[str, str] = {}
        for j, net in enumerate(site.vm_networks):
            nat = f"{at}.vm_networks[{j}]"
            if net.logical_network not in site.logical_networks:
                self.add(f"{nat}.logical_network", f"unknown logical network {net.logical_network!r} at {site.name}")
            self.unique(f"{nat}.subnets", [s.name for s in net.subnets], "VM subnet name")
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
                        wnv = net.isolation == Isolation.WNV
                        space[pat] = f"wnv:{net.name}" if wnv else f"ln:{net.logical_network}"
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
                (
                    int(ipaddress.ip_address(p.range[0])),
                    int(ipaddress.ip_address(p.range[1])),
                    (net.version, space[pat]),
                    pat,
                    p,
                )
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
        self.unique(f"{at}.vms", [v.name for v in site.vms], "VM name", f" at {site.name}")
        for j, vm in enumerate(site.vms):
            vat = f"{at}.vms[{j}]"
            if vm.host not in hosts:
                self.add(f"{vat}.host", f"unknown host {vm.host!r} at {site.name}")
            self.unique(f"{vat}.nics", [n.name for n in vm.nics], "NIC name", f" on {vm.name}")
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
        for pat, pool, _, net_name, _ in pools:
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
                    where = vm_names[(rep.site, vm.name)]
                    self.add(f"{rat}.site", f"{rep.site} already has a VM named {vm.name!r} ({where})")
                own = {n.name for n in vm.nics}
                nets = {n.name: n for n in target.vm_networks}
                self.unique(f"{rat}.nics", [n.name for n in rep.nics], "replica NIC")
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
        self.unique("dns_servers", [s.name for s in servers], "DNS server name")
        for i, server in enumerate(servers):
            zones = server.zones
            self.unique(f"dns_servers[{i}].zones", [fqdn(z.name) for z in zones], "zone", shown=[z.name for z in zones])
            for j, zone in enumerate(server.zones):
                zname = fqdn(zone.name)
                seen: set[tuple[str, str]] = set()
                for k, rec in enumerate(zone.records):
                    rat = f"dns_servers[{i}].zones[{j}].records[{k}]"
                    name = record_fqdn(rec.name, zname)
                    if not in_zone(name, zname):
                        self.add(f"{rat}.name", f"{name} is not in zone {zname}")
                    if (name, rec.type.value) in seen:
                        self.add(
                            f"{rat}.name", f"duplicate record set {name} {rec.type.value} (list all values in one)"
                        )
                    seen.add((name, rec.type.value))
                    for m, value in enumerate(rec.values):
                        try:
                            canonical_value(rec.type.value, value)
                        except ValueError as exc:
                            self.add(f"{rat}.values[{m}]", str(exc))  # the error names the value and its type


def _subnet(net: VmNetworkSpec, name: str | None) -> SubnetSpec | None:
    if name is None:
        return net.subnets[0] if net.subnets else None
    return next((s for s in net.subnets if s.name == name), None)
