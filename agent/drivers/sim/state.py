"""The simulated world as plain JSON-ready dicts: seeded from the inventory, turned into the port
types on read, and dumped canonically for comparison.

Plain dicts keep a 10,000-VM world cheap to load, mutate and write; the frozen pydantic values
of ``agent.domain.model`` are built only when a port returns them, with ``model_construct``
because everything stored here was validated on the way in.

Layout (``site`` keys first, so one VMM's view is one lookup)::

    sites[site]               = {hosts: {host: {max_failover_ips_per_family}}, logical_networks: [...]}
    networks[site][name]      = {logical_network, isolation, subnets: [...], test_network, description, copy_of}
    pools[site][name]         = {vm_network, vm_subnet, prefix, range_start, range_end, reserved, gateway, ...}
    grants[site][pool][addr]  = {owner_type, owner_id, description}
    vms[site][name]           = {host, role, power, nics: [{id, name, vm_network, vm_subnet, ip: [[mode, addr, len]]}]}
    replications[vm]          = {primary_site, primary_host, replica_site, replica_host, state, test_vm,
                                 recovery_points: [{name, created, app_consistent}], failover_point}
    failover[site][vm][nic]   = [{address, prefix_length, gateway, dns_servers}]
    dns[server][zone]["name TYPE"] = {ttl, values}
    routers[name]             = {site, routes: {prefix: {next_hop, interface, metric}}}
    sim                       = {seed, latency, faults: [{rule, seen, fired}]}
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from agent.domain.model import (
    FailoverIpSetting,
    IpConfiguration,
    IpGrant,
    Isolation,
    Nic,
    NicFailoverConfig,
    PowerState,
    RecordSet,
    RecordType,
    RecoveryPoint,
    Replication,
    ReplicationState,
    Route,
    StaticIpPool,
    VirtualMachine,
    VmNetwork,
    VmSubnet,
)
from agent.drivers.sim.addresses import ip_int, split_interface
from agent.drivers.sim.dnsnames import canonical_value, fqdn, record_fqdn
from agent.drivers.sim.faults import fault_entry
from agent.drivers.sim.inventory import SimInventory, nic_id
from agent.drivers.sim.specs import RecoveryPointSpec
from agent.gcpause import gc_paused

State = dict[str, Any]


# ---------------------------------------------------------------------------------- seed


def seed(inv: SimInventory) -> State:
    """The initial state described by a (validated) inventory."""

    with gc_paused():
        return _seed(inv)


def _seed(inv: SimInventory) -> State:
    st: State = {
        "sites": {},
        "networks": {},
        "pools": {},
        "grants": {},
        "vms": {},
        "replications": {},
        "failover": {},
        "dns": {},
        "routers": {},
        "sim": {
            "seed": inv.simulation.seed,
            "latency": inv.simulation.latency.model_dump(),
            "faults": [fault_entry(r) for r in inv.simulation.faults],
        },
    }
    for site in inv.sites:
        st["sites"][site.name] = {
            "hosts": {h.name: {"max_failover_ips_per_family": h.max_failover_ips_per_family} for h in site.hosts},
            "logical_networks": list(site.logical_networks),
        }
        nets = st["networks"][site.name] = {}
        pools = st["pools"][site.name] = {}
        grants: dict[str, dict[str, dict[str, Any]]] = {}
        st["grants"][site.name] = grants
        st["vms"][site.name] = {}
        st["failover"][site.name] = {}
        for net in site.vm_networks:
            nets[net.name] = {
                "logical_network": net.logical_network,
                "isolation": net.isolation.value,
                "subnets": [
                    {"name": s.name, "prefix": s.prefix, "vlan_id": s.vlan_id, "supports_dhcp": s.supports_dhcp}
                    for s in net.subnets
                ],
                "test_network": False,
                "description": net.description,
                "copy_of": None,
            }
            for sub in net.subnets:
                for pool in sub.pools:
                    pools[pool.name] = {
                        "vm_network": net.name,
                        "vm_subnet": sub.name,
                        "prefix": pool.prefix or sub.prefix,
                        "range_start": pool.range[0],
                        "range_end": pool.range[1],
                        "reserved": list(pool.reserved),
                        "gateway": pool.gateway,
                        "dns_servers": list(pool.dns_servers),
                        "dns_suffix": pool.dns_suffix,
                    }
        nic_ids: dict[str, str] = {}
        for vm in site.vms:
            nics = []
            for nic in vm.nics:
                ident = nic.id or nic_id(site.name, vm.name, nic.name)
                nic_ids[f"{vm.name}/{nic.name}"] = ident
                ip: list[list[Any]] = []
                for iface in nic.addresses:
                    address, length = split_interface(iface)
                    ip.append(["static", address, length])
                if nic.dhcp:
                    ip.append(["dhcp", None, None])
                subnet = nic.vm_subnet
                if nic.vm_network is not None and subnet is None:
                    subnet = _first_subnet(nets[nic.vm_network])
                nics.append(
                    {"id": ident, "name": nic.name, "vm_network": nic.vm_network, "vm_subnet": subnet, "ip": ip}
                )
            st["vms"][site.name][vm.name] = {
                "host": vm.host,
                "role": "primary",
                "power": vm.power.value,
                "nics": nics,
            }
        for net in site.vm_networks:
            for sub in net.subnets:
                for pool in sub.pools:
                    for g in pool.grants:
                        owner = nic_ids[g.owner] if g.owner is not None else g.owner_id
                        grants.setdefault(pool.name, {})[g.address] = {
                            "owner_type": g.owner_type,
                            "owner_id": owner,
                            "description": g.description,
                        }
        # VMM granted every static address it handed out of a pool to the NIC that carries it.
        for vm_name, vm in st["vms"][site.name].items():
            for nic in vm["nics"]:
                for mode, addr, _ in nic["ip"]:
                    if mode != "static":
                        continue
                    pool_name = find_pool(pools, nic["vm_network"], nic["vm_subnet"], addr)
                    if pool_name is None or addr in grants.get(pool_name, {}):
                        continue
                    grants.setdefault(pool_name, {})[addr] = {
                        "owner_type": "VirtualNetworkAdapter",
                        "owner_id": nic["id"],
                        "description": f"{vm_name}/{nic['name']}",
                    }
    for site in inv.sites:
        for vm in site.vms:
            if vm.replica is None:
                continue
            rep = vm.replica
            conn = {n.name: n for n in rep.nics}
            nics = []
            for nic in vm.nics:
                spec = conn.get(nic.name)
                network = spec.vm_network if spec else None
                subnet = spec.vm_subnet if spec else None
                if network is not None and subnet is None:
                    subnet = _first_subnet(st["networks"][rep.site][network])
                ident = nic_id(rep.site, vm.name, nic.name)
                nics.append({"id": ident, "name": nic.name, "vm_network": network, "vm_subnet": subnet, "ip": []})
                if spec and spec.failover:
                    st["failover"][rep.site].setdefault(vm.name, {})[nic.name] = [
                        setting_dict(s) for s in spec.failover
                    ]
            st["vms"][rep.site][vm.name] = {
                "host": rep.host,
                "role": "replica",
                "power": PowerState.OFF.value,
                "nics": nics,
            }
            st["replications"][vm.name] = {
                "primary_site": site.name,
                "primary_host": vm.host,
                "replica_site": rep.site,
                "replica_host": rep.host,
                "state": ReplicationState.REPLICATING.value,
                "test_vm": None,
                "recovery_points": [point_dict(p) for p in rep.recovery_points],
                "failover_point": None,
            }
    for server in inv.dns_servers:
        zones: dict[str, dict[str, Any]] = {}
        st["dns"][server.name] = zones
        for zone in server.zones:
            zname = fqdn(zone.name)
            records = zones[zname] = {}
            for rec in zone.records:
                name = record_fqdn(rec.name, zname)
                values = sorted({canonical_value(rec.type.value, v) for v in rec.values})
                records[f"{name} {rec.type.value}"] = {"ttl": rec.ttl, "values": values}
    for router in inv.routers:
        st["routers"][router.name] = {
            "site": router.site,
            "routes": {
                r.prefix: {"next_hop": r.next_hop, "interface": r.interface, "metric": r.metric} for r in router.routes
            },
        }
    return st


def _first_subnet(net: dict[str, Any]) -> str | None:
    return net["subnets"][0]["name"] if net["subnets"] else None


def setting_dict(s: FailoverIpSetting) -> dict[str, Any]:
    return {
        "address": s.address,
        "prefix_length": s.prefix_length,
        "gateway": s.gateway,
        "dns_servers": list(s.dns_servers),
    }


# ------------------------------------------------------------------------------ lookups


def pool_contains(pool: dict[str, Any], address: str) -> bool:
    family, number = ip_int(address)
    start_family, start = ip_int(pool["range_start"])
    return family == start_family and start <= number <= ip_int(pool["range_end"])[1]


def find_pool(pools: dict[str, Any], network: str | None, subnet: str | None, address: str) -> str | None:
    """The pool of ``network``/``subnet`` whose range holds ``address``."""

    for name, pool in pools.items():
        in_subnet = pool["vm_network"] == network and (subnet is None or pool["vm_subnet"] == subnet)
        if in_subnet and pool_contains(pool, address):
            return name
    return None


# ------------------------------------------------------------------------- port values

M = TypeVar("M", bound=BaseModel)
_setattr = object.__setattr__


def _new(cls: type[M], values: dict[str, Any]) -> M:
    """What ``model_construct`` does for a model without aliases, defaults to fill in or private
    attributes, at a third of the cost (a 10,000-VM read builds ~100,000 values). ``values``
    must name every field; everything here was validated when it entered the state."""

    m = cls.__new__(cls)
    _setattr(m, "__dict__", values)
    _setattr(m, "__pydantic_fields_set__", set(values))
    _setattr(m, "__pydantic_extra__", None)
    _setattr(m, "__pydantic_private__", None)
    return m


def subnet_value(s: dict[str, Any]) -> VmSubnet:
    return _new(
        VmSubnet,
        {"name": s["name"], "prefix": s["prefix"], "vlan_id": s["vlan_id"], "supports_dhcp": s["supports_dhcp"]},
    )


def network_value(site: str, name: str, n: dict[str, Any]) -> VmNetwork:
    return _new(
        VmNetwork,
        {
            "name": name,
            "site": site,
            "logical_network": n["logical_network"],
            "isolation": Isolation(n["isolation"]),
            "subnets": tuple(subnet_value(s) for s in n["subnets"]),
            "test_network": n["test_network"],
            "description": n["description"],
        },
    )


def pool_value(site: str, name: str, p: dict[str, Any]) -> StaticIpPool:
    return _new(
        StaticIpPool,
        {
            "name": name,
            "site": site,
            "vm_network": p["vm_network"],
            "vm_subnet": p["vm_subnet"],
            "prefix": p["prefix"],
            "range_start": p["range_start"],
            "range_end": p["range_end"],
            "reserved": tuple(p["reserved"]),
            "gateway": p["gateway"],
            "dns_servers": tuple(p["dns_servers"]),
            "dns_suffix": p["dns_suffix"],
        },
    )


def grant_value(site: str, pool: str, address: str, g: dict[str, Any]) -> IpGrant:
    return _new(
        IpGrant,
        {
            "pool": pool,
            "site": site,
            "address": address,
            "owner_type": g["owner_type"],
            "owner_id": g["owner_id"],
            "description": g["description"],
        },
    )


_DHCP = IpConfiguration(mode="dhcp")


def nic_value(n: dict[str, Any]) -> Nic:
    return _new(
        Nic,
        {
            "id": n["id"],
            "name": n["name"],
            "vm_network": n["vm_network"],
            "vm_subnet": n["vm_subnet"],
            "ip_configurations": tuple(
                _DHCP
                if mode == "dhcp"
                else _new(IpConfiguration, {"mode": "static", "address": a, "prefix_length": p})
                for mode, a, p in n["ip"]
            ),
        },
    )


_POWER = {p.value: p for p in PowerState}


def vm_value(site: str, name: str, v: dict[str, Any]) -> VirtualMachine:
    return _new(
        VirtualMachine,
        {
            "name": name,
            "site": site,
            "host": v["host"],
            "role": v["role"],
            "power_state": _POWER[v["power"]],
            "nics": tuple(nic_value(n) for n in v["nics"]),
        },
    )


def point_dict(p: RecoveryPointSpec) -> dict[str, Any]:
    return {"name": p.name, "created": p.created.astimezone(UTC).isoformat(), "app_consistent": p.app_consistent}


def replication_value(vm: str, r: dict[str, Any], host: str | None = None) -> Replication:
    """The relationship as ``host`` reports it: only the replica host lists recovery points."""
    points = r.get("recovery_points", []) if host in (None, r["replica_host"]) else []
    return _new(
        Replication,
        {
            "vm": vm,
            "primary_site": r["primary_site"],
            "primary_host": r["primary_host"],
            "replica_site": r["replica_site"],
            "replica_host": r["replica_host"],
            "state": ReplicationState(r["state"]),
            "test_vm": r["test_vm"],
            "recovery_points": tuple(_new(RecoveryPoint, {"name": p["name"],
                                                          "created": datetime.fromisoformat(p["created"]),
                                                          "app_consistent": p["app_consistent"]}) for p in points),
            "failover_point": r.get("failover_point"),
        },
    )


def setting_value(s: dict[str, Any]) -> FailoverIpSetting:
    return _new(
        FailoverIpSetting,
        {
            "address": s["address"],
            "prefix_length": s["prefix_length"],
            "gateway": s["gateway"],
            "dns_servers": tuple(s["dns_servers"]),
        },
    )


def failover_value(vm: str, nic: str, host: str, settings: list[dict[str, Any]]) -> NicFailoverConfig:
    return _new(
        NicFailoverConfig, {"vm": vm, "nic": nic, "host": host, "settings": tuple(setting_value(s) for s in settings)}
    )


def record_value(zone: str, key: str, r: dict[str, Any]) -> RecordSet:
    name, _, rtype = key.rpartition(" ")
    return _new(
        RecordSet,
        {"zone": zone, "name": name, "type": RecordType(rtype), "ttl": r["ttl"], "values": tuple(r["values"])},
    )


def route_value(router: str, prefix: str, r: dict[str, Any]) -> Route:
    return _new(
        Route,
        {
            "router": router,
            "prefix": prefix,
            "next_hop": r["next_hop"],
            "interface": r["interface"],
            "metric": r["metric"],
        },
    )


# ----------------------------------------------------------------------------- snapshot


def _pruned(value: Any) -> Any:
    """Drops empty containers left behind by deletions, so "created then removed" equals "never
    created"."""

    if isinstance(value, dict):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v != {}}
    return value


_OPTIONAL_REPLICATION = frozenset({"recovery_points", "failover_point"})


def snapshot(st: State) -> dict[str, Any]:
    """A canonical, comparable copy of everything the ports can observe or change."""

    vms = {
        site: {name: {k: v for k, v in vm.items() if k != "saved_ip"} for name, vm in by_site.items()}
        for site, by_site in st["vms"].items()
    }
    with gc_paused():
        # A JSON round trip copies these plain trees several times faster than deepcopy.
        return json.loads(json.dumps(
        {
            "vm_networks": _pruned(st["networks"]),
            "pools": _pruned(st["pools"]),
            "grants": _pruned(st["grants"]),
            "vms": _pruned(vms),
            # Recovery points and the point used only when there are: the dumps of states written
            # before they were modelled stay equal to what those states still are.
            "replications": {vm: {k: v for k, v in r.items() if v or k not in _OPTIONAL_REPLICATION}
                             for vm, r in st["replications"].items()},
            "failover_configs": _pruned(st["failover"]),
            "record_sets": st["dns"],
            "routes": st["routers"],
        }
        ))
