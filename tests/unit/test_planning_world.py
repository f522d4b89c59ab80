"""Builders for small, readable planning worlds (two sites, a third site), shared by the
``test_planning*`` modules, plus checks that the builders themselves make valid values.

Naming: the primary VM's NIC ids are ``<vm>/<nic>@p``, the replica's ``<vm>/<nic>@r``, so a
test can say which NIC owns a grant without looking anything up.
"""

from __future__ import annotations

from typing import Any

from agent.config import AgentConfig
from agent.domain.model import (
    FailoverIpSetting,
    Inventory,
    IpConfiguration,
    IpGrant,
    Isolation,
    Nic,
    NicFailoverConfig,
    RecordSet,
    RecordType,
    Replication,
    Route,
    StaticIpPool,
    VirtualMachine,
    VmNetwork,
    VmSubnet,
)
from agent.domain.plan import ReserveIp

A, B, C = "alpha", "bravo", "charlie"
"""Primary site, recovery site, third site."""


def ipconf(spec: str) -> IpConfiguration:
    """``"192.168.1.10/24"`` (static) or ``"dhcp"``."""
    if spec == "dhcp":
        return IpConfiguration(mode="dhcp")
    address, plen = spec.split("/")
    return IpConfiguration(mode="static", address=address, prefix_length=int(plen))


class World:
    """A mutable bag of inventory items; ``inventory()`` freezes it."""

    def __init__(self) -> None:
        self.networks: list[VmNetwork] = []
        self.pools: list[StaticIpPool] = []
        self.grants: list[IpGrant] = []
        self.vms: list[VirtualMachine] = []
        self.replications: list[Replication] = []
        self.failover_configs: list[NicFailoverConfig] = []
        self.record_sets: list[RecordSet] = []
        self.routes: list[Route] = []

    # ------------------------------------------------------------------------- VMM
    def network(self, site: str, name: str, subnets: dict[str, str] | None = None,
                isolation: Isolation = Isolation.VLAN, test_network: bool = False) -> World:
        subs = tuple(VmSubnet(name=n, prefix=p) for n, p in (subnets or {}).items())
        self.networks.append(VmNetwork(name=name, site=site, logical_network="ln", isolation=isolation,
                                       subnets=subs, test_network=test_network))
        return self

    def pool(self, site: str, network: str, subnet: str, prefix: str, start: str, end: str,
             name: str | None = None, reserved: tuple[str, ...] = (), gateway: str | None = None,
             dns: tuple[str, ...] = ()) -> World:
        self.pools.append(StaticIpPool(
            name=name or f"{network}-{subnet}-pool", site=site, vm_network=network, vm_subnet=subnet,
            prefix=prefix, range_start=start, range_end=end, reserved=reserved, gateway=gateway, dns_servers=dns,
        ))
        return self

    def grant(self, site: str, pool: str, address: str, owner: str) -> World:
        self.grants.append(IpGrant(pool=pool, site=site, address=address, owner_id=owner))
        return self

    def vm(self, name: str, nics: dict[str, tuple[str | None, str | None, list[str]]],
           src: str = A, dst: str = B, replica_connected: dict[str, tuple[str, str]] | None = None,
           replicated: bool = True, role: str = "primary") -> World:
        """``nics``: name -> (vm network, vm subnet, ["addr/len" | "dhcp", ...])."""
        self.vms.append(VirtualMachine(
            name=name, site=src, host=f"{src}-host1", role=role,
            nics=tuple(Nic(id=f"{name}/{n}@p", name=n, vm_network=net, vm_subnet=sub,
                           ip_configurations=tuple(ipconf(x) for x in ips))
                       for n, (net, sub, ips) in nics.items()),
        ))
        if not replicated:
            return self
        connected = replica_connected or {}
        self.vms.append(VirtualMachine(
            name=name, site=dst, host=f"{dst}-host1", role="replica",
            nics=tuple(Nic(id=f"{name}/{n}@r", name=n, vm_network=connected.get(n, (None, None))[0],
                           vm_subnet=connected.get(n, (None, None))[1])
                       for n in nics),
        ))
        self.replications.append(Replication(vm=name, primary_site=src, primary_host=f"{src}-host1",
                                             replica_site=dst, replica_host=f"{dst}-host1"))
        return self

    def test_vm(self, vm: str, site: str, nics: dict[str, tuple[str | None, str | None, list[str]]]) -> World:
        self.vms.append(VirtualMachine(
            name=f"{vm} - Test", site=site, host=f"{site}-host1", role="test",
            nics=tuple(Nic(id=f"{vm}/{n}@t", name=n, vm_network=net, vm_subnet=sub,
                           ip_configurations=tuple(ipconf(x) for x in ips))
                       for n, (net, sub, ips) in nics.items()),
        ))
        return self

    # ---------------------------------------------------------------- Hyper-V, DNS, routes
    def failover_config(
        self, vm: str, nic: str, host: str, settings: list[tuple[str, int, str | None, tuple]]
    ) -> World:
        self.failover_configs.append(NicFailoverConfig(
            vm=vm, nic=nic, host=host,
            settings=tuple(FailoverIpSetting(address=a, prefix_length=p, gateway=g, dns_servers=d)
                           for a, p, g, d in settings),
        ))
        return self

    def record(self, zone: str, name: str, rtype: str, values: tuple[str, ...], ttl: int = 3600) -> World:
        self.record_sets.append(RecordSet(zone=zone, name=name, type=RecordType(rtype), ttl=ttl, values=values))
        return self

    def route(self, router: str, prefix: str, next_hop: str | None = None, interface: str | None = None,
              metric: int = 256) -> World:
        self.routes.append(Route(router=router, prefix=prefix, next_hop=next_hop, interface=interface, metric=metric))
        return self

    def inventory(self) -> Inventory:
        return Inventory(
            vm_networks=tuple(self.networks), pools=tuple(self.pools), grants=tuple(self.grants),
            vms=tuple(self.vms), replications=tuple(self.replications),
            failover_configs=tuple(self.failover_configs), record_sets=tuple(self.record_sets),
            routes=tuple(self.routes),
        )

    def apply_grants(self, reservations: list[ReserveIp]) -> World:
        """What the engine would have done after a run: every new reservation is now a grant."""
        for r in reservations:
            if not r.existing:
                self.grant(r.site, r.pool, r.address, r.nic_id)
        return self


def config(*, mappings: list[dict] | None = None, subnets: list[dict] | None = None,
           dns: dict | None = None, plans: list[dict] | None = None) -> AgentConfig:
    """A config for sites alpha/bravo (+ third site charlie) with routers r-a, r-b, r-c."""
    body: dict[str, Any] = {
        "agent": {"site": A},
        "sites": [
            {"name": A, "routers": [{"name": "r-a"}], "hyperv_hosts": [{"name": f"{A}-host1"}]},
            {"name": B, "routers": [{"name": "r-b"}], "hyperv_hosts": [{"name": f"{B}-host1"}]},
        ],
        "third_sites": [{"name": C, "routers": [{"name": "r-c"}]}],
        "simulator": {"inventory": "inventory.yaml"},
        "network_mappings": mappings or [],
        "subnets": subnets or [],
        "dns": dns or {},
        "recovery_plans": plans or [],
    }
    return AgentConfig.model_validate(body)


def mapping(src_net: str, dst_net: str, strategy: str, test: dict | None = None,
            src: str = A, dst: str = B) -> dict:
    m = {"source": {"site": src, "vm_network": src_net}, "target": {"site": dst, "vm_network": dst_net},
         "ip_strategy": strategy}
    if test is not None:
        m["test_network"] = test
    return m


def plan(name: str, *groups: list[str]) -> dict:
    return {"name": name, "groups": [{"name": f"g{i + 1}", "vms": list(vms)} for i, vms in enumerate(groups)]}


def whole_subnet(prefix: str, *, stretched: bool = False, third: bool = True) -> dict:
    """Subnet routes: r-a announces via 10.0.0.1 at alpha, r-b via 10.0.1.1 at bravo, and r-c at
    the third site points at whichever site holds the subnet."""
    body: dict[str, Any] = {"prefix": prefix, "stretched": stretched}
    if not stretched:
        body["announcements"] = {A: [{"router": "r-a", "next_hop": "10.0.0.1"}],
                                 B: [{"router": "r-b", "next_hop": "10.0.1.1"}]}
    if third:
        body["third_site_routes"] = [{"router": "r-c", "next_hop_by_site": {A: "10.9.0.1", B: "10.9.1.1"}}]
    return body


DNS_PROD = {
    "servers": [{"name": "ns-prod", "kind": "sim"}, {"name": "ns-test", "kind": "sim", "purpose": "test"}],
    "zones": [
        {"name": "corp.example", "server": "ns-prod"},
        {"name": "168.192.in-addr.arpa", "server": "ns-prod"},
        {"name": "16.172.in-addr.arpa", "server": "ns-prod"},
        {"name": "8.b.d.0.1.0.0.2.ip6.arpa", "server": "ns-prod"},
        {"name": "test.corp.example", "server": "ns-test"},
        {"name": "corp.example", "server": "ns-test"},
        {"name": "16.172.in-addr.arpa", "server": "ns-test"},
    ],
    "default_domain": "corp.example",
    "ttl": {"failover_ttl": 60},
}


def standard_world() -> World:
    """alpha: network prod (subnets web 192.168.1.0/24, db 192.168.2.0/24) and app
    (192.168.3.0/24); bravo: prod-dr with the same subnets (retain) and app-dr on 172.16.1.0/24
    (change). Two VMs web01/web02 in web, app01 in app."""
    w = World()
    w.network(A, "prod", {"web": "192.168.1.0/24", "db": "192.168.2.0/24"})
    w.network(A, "app", {"app": "192.168.3.0/24"})
    w.network(B, "prod-dr", {"web": "192.168.1.0/24", "db": "192.168.2.0/24"})
    w.network(B, "app-dr", {"app-dr": "172.16.1.0/24"})
    w.pool(B, "prod-dr", "web", "192.168.1.0/24", "192.168.1.10", "192.168.1.200",
           name="web-pool", gateway="192.168.1.1", dns=("192.168.1.53",))
    w.pool(B, "prod-dr", "db", "192.168.2.0/24", "192.168.2.10", "192.168.2.200",
           name="db-pool", gateway="192.168.2.1")
    w.pool(B, "app-dr", "app-dr", "172.16.1.0/24", "172.16.1.10", "172.16.1.50",
           name="app-pool", gateway="172.16.1.1", dns=("172.16.1.53",))
    w.vm("web01", {"nic0": ("prod", "web", ["192.168.1.20/24"])})
    w.vm("web02", {"nic0": ("prod", "web", ["192.168.1.21/24"])})
    w.vm("app01", {"nic0": ("app", "app", ["192.168.3.30/24"])})
    return w


def standard_config(**kw: Any) -> AgentConfig:
    kw.setdefault("mappings", [mapping("prod", "prod-dr", "retain"), mapping("app", "app-dr", "change")])
    kw.setdefault("subnets", [whole_subnet("192.168.1.0/24"), whole_subnet("192.168.2.0/24")])
    kw.setdefault("plans", [plan("web", ["web01", "web02"], ["app01"])])
    kw.setdefault("dns", DNS_PROD)
    return config(**kw)


# --------------------------------------------------------------- the builders themselves


def test_standard_world_is_valid() -> None:
    inv = standard_world().inventory()
    assert {v.name for v in inv.vms} == {"web01", "web02", "app01"}
    assert len(inv.vms) == 6  # primary + replica each
    cfg = standard_config()
    assert cfg.plan("web").vms == ["web01", "web02", "app01"]
