"""The simulated VMM server of one site (:class:`agent.ports.Vmm`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.domain.errors import (
    AddressAlreadyGranted,
    AddressOutsidePool,
    AddressReserved,
    InvalidRequest,
    InvalidSetting,
    NetworkInUse,
    NotATestNetwork,
    PoolExhausted,
)
from agent.domain.model import IpGrant, Isolation, Nic, VmNetwork
from agent.drivers.sim.addresses import FreeAddresses
from agent.drivers.sim.state import (
    State,
    grant_value,
    network_value,
    nic_value,
    pool_contains,
    pool_value,
    vm_value,
)
from agent.errors import ConflictError, NotFoundError
from agent.gcpause import gc_paused
from agent.ports import GrantRequest, ItemResult, NicConnection, TestNetworkSpec, VmmInventory

if TYPE_CHECKING:
    from agent.drivers.sim.world import SimWorld


class SimVmm:
    """One site's VMM server, strict like the real one.

    Beyond :class:`agent.ports.Vmm`:

    * ``grant_ips`` with ``address=""`` grants the lowest free address of the pool, as
      ``Grant-SCIPAddress`` does without ``-IPAddress`` (``pool_exhausted`` when none is left).
      Such a request names no address, so it is *not* idempotent: each call grants another one.
    * A grant's owner must be a NIC of a VM at this site (``not_found`` otherwise).
    * ``connect_nics`` with addresses needs each address granted to that NIC in a pool of the
      network (and subnet) it connects to: ``not_found`` when not granted at all,
      ``address_already_granted`` when granted to another NIC, ``address_outside_pool`` when no
      pool of that network holds it, ``invalid_setting`` for a prefix length other than the
      pool's. ``vm_subnet=None`` picks the network's first subnet (as ASR did).
    * ``revoke_ips`` of a grant in a pool that no longer exists is ``changed=False`` (the grant
      went with it); a grant of another site is ``invalid_request``.
    """

    def __init__(self, world: SimWorld, site: str) -> None:
        self._world = world
        self.site = site

    # ------------------------------------------------------------------------------ read

    def read_inventory(self) -> VmmInventory:
        site = self.site

        def read(st: State) -> tuple[VmmInventory, Sequence[str]]:
            return self._world._cached(("vmm", site), lambda: _inventory(st, site), _site_sections(site)), ()

        return self._world._single("vmm.read_inventory", site, [site], read, mutating=False)

    # ---------------------------------------------------------------------------- grants

    def grant_ips(self, requests: Sequence[GrantRequest]) -> list[ItemResult[IpGrant]]:
        site = self.site
        free: dict[str, FreeAddresses] = {}  # per pool, looked up on the first address="" request

        def apply(st: State, req: GrantRequest) -> ItemResult[IpGrant]:
            pool = _pool(st, site, req.pool)
            # Kept while the site's VMs do not change: a scan of every NIC per call grew with the world.
            owners = self._world._cached(("nic-owners", site), lambda: _nic_owners(st, site), [("vms", site)])
            if req.owner_id not in owners:
                raise NotFoundError(
                    f"no NIC with id {req.owner_id} at {site} to grant {req.address or 'an address'} to",
                    owner_id=req.owner_id,
                    pool=req.pool,
                    site=site,
                )
            granted = st["grants"][site].get(req.pool, {})
            if req.address == "":
                if req.pool not in free:
                    free[req.pool] = FreeAddresses(pool, granted)
                address = free[req.pool].take()
                if address is None:
                    raise PoolExhausted(
                        f"pool {req.pool} at {site} has no free address ({pool['range_start']}-{pool['range_end']})",
                        pool=req.pool,
                        site=site,
                    )
            else:
                address = _canonical(req.address, req.pool)
                _check_grantable(pool, req.pool, address)
                held = granted.get(address)
                if held is not None:
                    if held["owner_id"] == req.owner_id:
                        return ItemResult(f"{req.pool}:{address}", grant_value(site, req.pool, address, held))
                    raise AddressAlreadyGranted(
                        f"{address} in pool {req.pool} is already granted to {held['owner_id']}"
                        + (f" ({held['description']})" if held["description"] else ""),
                        pool=req.pool,
                        address=address,
                        owner_id=held["owner_id"],
                    )
            entry = {"owner_type": "VirtualNetworkAdapter", "owner_id": req.owner_id, "description": req.description}
            held_now = st["grants"][site].setdefault(req.pool, {})
            held_now[address] = entry
            if req.pool in free:
                free[req.pool].granted(address)
            return ItemResult(f"{req.pool}:{address}", grant_value(site, req.pool, address, entry), changed=True)

        return self._world._batch(
            "vmm.grant_ips", site, requests, lambda r: r.key, lambda r: (r.pool, r.key, r.owner_id), apply
        )

    def revoke_ips(self, grants: Sequence[IpGrant]) -> list[ItemResult[None]]:
        site = self.site

        def apply(st: State, g: IpGrant) -> ItemResult[None]:
            key = f"{g.pool}:{g.address}"
            if g.site != site:
                raise InvalidRequest(
                    f"grant {key} belongs to site {g.site}; this is the VMM of {site}", pool=g.pool, address=g.address
                )
            held_in_pool = st["grants"][site].get(g.pool, {})
            held = held_in_pool.get(g.address)
            if held is None:
                return ItemResult(key)
            if held["owner_id"] != g.owner_id:
                raise ConflictError(
                    f"{g.address} in pool {g.pool} is now granted to {held['owner_id']}, not {g.owner_id}; left alone",
                    pool=g.pool,
                    address=g.address,
                    owner_id=held["owner_id"],
                )
            del held_in_pool[g.address]
            if not held_in_pool:
                del st["grants"][site][g.pool]
            return ItemResult(key, changed=True)

        return self._world._batch(
            "vmm.revoke_ips", site, grants, lambda g: f"{g.pool}:{g.address}", lambda g: (g.pool, g.address), apply
        )

    # --------------------------------------------------------------------- test networks

    def create_test_networks(self, specs: Sequence[TestNetworkSpec]) -> list[ItemResult[VmNetwork]]:
        site = self.site

        def apply(st: State, spec: TestNetworkSpec) -> ItemResult[VmNetwork]:
            nets, pools = st["networks"][site], st["pools"][site]
            orig = nets.get(spec.copy_of)
            if orig is None:
                raise NotFoundError(f"no VM network {spec.copy_of} at {site} to copy", network=spec.copy_of, site=site)
            existing = nets.get(spec.name)
            if existing is not None:
                if existing["test_network"] and existing["copy_of"] == spec.copy_of:
                    return ItemResult(spec.name, network_value(site, spec.name, existing))
                what = f"a test copy of {existing['copy_of']}" if existing["test_network"] else "not a test network"
                raise ConflictError(
                    f"VM network {spec.name} already exists at {site} and is {what}", network=spec.name, site=site
                )
            copies = {f"{spec.name}/{name}": p for name, p in pools.items() if p["vm_network"] == spec.copy_of}
            clash = sorted(n for n in copies if n in pools)
            if clash:
                raise ConflictError(f"static IP pool {clash[0]} already exists at {site}", pool=clash[0], site=site)
            net = {
                "logical_network": orig["logical_network"],
                "isolation": Isolation.WNV.value,
                "subnets": [dict(s) for s in orig["subnets"]],
                "test_network": True,
                "description": spec.description,
                "copy_of": spec.copy_of,
            }
            nets[spec.name] = net
            for name, p in copies.items():
                pools[name] = {
                    **p,
                    "vm_network": spec.name,
                    "reserved": list(p["reserved"]),
                    "dns_servers": list(p["dns_servers"]),
                }
            return ItemResult(spec.name, network_value(site, spec.name, net), changed=True)

        return self._world._batch(
            "vmm.create_test_networks", site, specs, lambda s: s.name, lambda s: (s.name, s.copy_of), apply
        )

    def delete_test_networks(self, names: Sequence[str]) -> list[ItemResult[None]]:
        site = self.site

        def apply(st: State, name: str) -> ItemResult[None]:
            nets, pools = st["networks"][site], st["pools"][site]
            net = nets.get(name)
            if net is None:
                return ItemResult(name)
            if not net["test_network"]:
                raise NotATestNetwork(
                    f"VM network {name} at {site} was not created as a test network; not deleting it",
                    network=name,
                    site=site,
                )
            nics = sorted(
                f"{vm_name}/{nic['name']}"
                for vm_name, vm in st["vms"][site].items()
                for nic in vm["nics"]
                if nic["vm_network"] == name
            )
            own_pools = [p for p, pool in pools.items() if pool["vm_network"] == name]
            held = sorted(f"{p}:{a}" for p in own_pools for a in st["grants"][site].get(p, {}))
            if nics or held:
                parts = ([f"NICs connected: {', '.join(nics)}"] if nics else []) + (
                    [f"grants held: {', '.join(held)}"] if held else []
                )
                raise NetworkInUse(
                    f"test network {name} at {site} is in use ({'; '.join(parts)})",
                    network=name,
                    site=site,
                    nics=nics or None,
                    grants=held or None,
                )
            for p in own_pools:
                del pools[p]
                st["grants"][site].pop(p, None)
            del nets[name]
            return ItemResult(name, changed=True)

        return self._world._batch("vmm.delete_test_networks", site, names, lambda n: n, lambda n: (n,), apply)

    # ------------------------------------------------------------------------------ NICs

    def connect_nics(self, connections: Sequence[NicConnection]) -> list[ItemResult[Nic]]:
        site = self.site

        def apply(st: State, c: NicConnection) -> ItemResult[Nic]:
            vm = st["vms"][site].get(c.vm)
            if vm is None:
                raise NotFoundError(f"no VM {c.vm} at {site}", vm=c.vm, site=site)
            nic = next((n for n in vm["nics"] if n["name"] == c.nic), None)
            if nic is None:
                raise NotFoundError(f"VM {c.vm} at {site} has no NIC {c.nic}", vm=c.vm, nic=c.nic, site=site)
            if c.vm_network is None:
                if c.addresses or c.vm_subnet:
                    raise InvalidSetting(
                        f"{c.key}: a NIC being disconnected takes no subnet or addresses", vm=c.vm, nic=c.nic
                    )
                wanted: tuple[Any, Any, list[list[Any]]] = (None, None, [])
            else:
                wanted = self._connection(st, c, nic)
            if (nic["vm_network"], nic["vm_subnet"], nic["ip"]) == wanted:
                return ItemResult(c.key, nic_value(nic))
            nic["vm_network"], nic["vm_subnet"], nic["ip"] = wanted
            return ItemResult(c.key, nic_value(nic), changed=True)

        return self._world._batch(
            "vmm.connect_nics", site, connections, lambda c: c.key, lambda c: (c.vm, c.key, c.vm_network or ""), apply
        )

    def _connection(self, st: State, c: NicConnection, nic: dict[str, Any]) -> tuple[str, str | None, list[list[Any]]]:
        site = self.site
        net = st["networks"][site].get(c.vm_network)
        if net is None:
            raise NotFoundError(f"no VM network {c.vm_network} at {site}", network=c.vm_network, site=site)
        if c.vm_subnet is not None:
            if not any(s["name"] == c.vm_subnet for s in net["subnets"]):
                raise NotFoundError(
                    f"VM network {c.vm_network} at {site} has no subnet {c.vm_subnet}",
                    network=c.vm_network,
                    subnet=c.vm_subnet,
                )
            subnet: str | None = c.vm_subnet
        else:
            subnet = net["subnets"][0]["name"] if net["subnets"] else None
        ips: list[list[Any]] = []
        for raw, plen in c.addresses:
            address = _canonical(raw, c.vm_network or "")
            pool_name = next(
                (
                    name
                    for name, p in st["pools"][site].items()
                    if p["vm_network"] == c.vm_network
                    and (subnet is None or p["vm_subnet"] == subnet)
                    and pool_contains(p, address)
                ),
                None,
            )
            where = f"{c.vm_network}/{subnet}" if subnet else c.vm_network
            if pool_name is None:
                raise AddressOutsidePool(
                    f"{address} is in no static IP pool of {where} at {site}", address=address, network=c.vm_network
                )
            held = st["grants"][site].get(pool_name, {}).get(address)
            if held is None:
                raise NotFoundError(
                    f"{address} is not granted in pool {pool_name}; grant it to {c.key} before connecting",
                    pool=pool_name,
                    address=address,
                    vm=c.vm,
                    nic=c.nic,
                )
            if held["owner_id"] != nic["id"]:
                raise AddressAlreadyGranted(
                    f"{address} in pool {pool_name} is granted to {held['owner_id']}, not to {c.key} ({nic['id']})",
                    pool=pool_name,
                    address=address,
                    owner_id=held["owner_id"],
                )
            pool_len = ipaddress.ip_network(st["pools"][site][pool_name]["prefix"]).prefixlen
            if plen != pool_len:
                raise InvalidSetting(
                    f"{address}/{plen}: pool {pool_name} is a /{pool_len}", pool=pool_name, address=address
                )
            ips.append(["static", address, plen])
        return c.vm_network or "", subnet, ips or [["dhcp", None, None]]

    # --------------------------------------------------------------------------- probe

    def probe(self) -> str:
        """Reads nothing but the server's answer; fault rules match ``vmm.probe`` and the site."""

        site = self.site

        def read(st: State) -> tuple[str, Sequence[str]]:
            return (f"simulated VMM server of {site} answers ({len(st['vms'][site])} VMs, "
                    f"{len(st['networks'][site])} VM networks)"), ()

        return self._world._single("vmm.probe", site, [site], read, mutating=False)


# ---------------------------------------------------------------------------- helpers


def _site_sections(site: str) -> list[tuple[str, ...]]:
    """What one site's VMM inventory is made of: a change anywhere else leaves it as it was."""

    return [("networks", site), ("pools", site), ("grants", site), ("vms", site)]


def _inventory(st: State, site: str) -> VmmInventory:
    with gc_paused():
        return _build_inventory(st, site)


def _build_inventory(st: State, site: str) -> VmmInventory:
    grants = st["grants"][site]
    return VmmInventory(
        site=site,
        vm_networks=tuple(network_value(site, n, v) for n, v in st["networks"][site].items()),
        pools=tuple(pool_value(site, n, p) for n, p in st["pools"][site].items()),
        grants=tuple(grant_value(site, p, a, g) for p, held in grants.items() for a, g in held.items()),
        vms=tuple(vm_value(site, n, v) for n, v in st["vms"][site].items()),
    )


def _pool(st: State, site: str, name: str) -> dict[str, Any]:
    pool = st["pools"][site].get(name)
    if pool is None:
        raise NotFoundError(f"no static IP pool {name} at {site}", pool=name, site=site)
    return pool


def _nic_owners(st: State, site: str) -> dict[str, str]:
    return {nic["id"]: f"{vm}/{nic['name']}" for vm, v in st["vms"][site].items() for nic in v["nics"]}


def _canonical(address: str, pool: str) -> str:
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        raise AddressOutsidePool(f"{address!r} is not an IP address", pool=pool, address=address) from None


def _check_grantable(pool: dict[str, Any], name: str, address: str) -> None:
    if not pool_contains(pool, address):
        raise AddressOutsidePool(
            f"{address} is outside pool {name} ({pool['range_start']}-{pool['range_end']})", pool=name, address=address
        )
    if address in pool["reserved"]:
        raise AddressReserved(f"{address} is in the reserved set of pool {name}", pool=name, address=address)
