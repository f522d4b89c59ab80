"""Address overrides: the operator's own failover and test addresses for single IP configurations.

An override replaces the derived address of one slot (VM, NIC, IP configuration): it picks the
pool of the target (or test) subnet whose range holds it, and it is reserved exactly -- never
swapped for another free address. One that cannot be honoured refuses the plan, naming the VM,
NIC, IP configuration and pool: a DR tool must not quietly give a VM another address than the
one its operator wrote down.

Overrides apply to failovers through a network mapping in its own direction; a failback (the
mapping used in reverse) goes back to the addresses the plan derives, and says so in a note.
"""

from __future__ import annotations

from collections.abc import Hashable

from agent.config import AddressOverride
from agent.domain import validation as v
from agent.domain.ipam import AddressRequest, Allocation, AllocationResult, PoolAllocator, allocate, to_int
from agent.domain.model import StaticIpPool, name_test_vm
from agent.domain.planning.state import PlannerState
from agent.domain.planning.work import Slot, VmWork

_PINNED = "\0override"
"""Owner standing in for an override's address while the other requests are served, so none of
them takes it (not a NIC id: VMM ids never hold a NUL)."""


def _key(slot: Slot) -> tuple[str, str, int]:
    """The slot as ``address_overrides`` names it (:attr:`AddressOverride.key`)."""
    return (slot.nic.vm.name, slot.nic.name, slot.ip_index)


def _where(o: AddressOverride) -> str:
    return f"VM {o.vm} NIC {o.nic} IP configuration {o.ip_configuration}"


def _refusal(code: str, o: AddressOverride, purpose: str, text: str, **fields: object) -> v.Refusal:
    return v.Refusal(code, f"{_where(o)}: {text}", {
        "vm": o.vm, "nic": o.nic, "ip_configuration": o.ip_configuration, "purpose": purpose, **fields})


def _pool_text(pool: StaticIpPool) -> str:
    return f"{pool.name} ({pool.range_start}-{pool.range_end})"


class OverridePlanning(PlannerState):
    def _override(self, slot: Slot) -> AddressOverride | None:
        return self.overrides.get(_key(slot)) if self.overrides else None

    def override_failover_pool(self, slot: Slot, site: str, network: str, subnet: str) -> None:
        """Once the slot has its derived pool: the override's address and the pool holding it."""
        o = self._override(slot)
        if o is None:
            return
        if o.failover is None or slot.pool is None:  # no pool: refused as no_static_pool already
            return
        use = slot.nic.mapping
        if use.reverse:
            self.note(f"{_where(o)}: the failover override {o.failover} applies to failovers through "
                      f"network_mappings[{use.index}] in its own direction; this failback derives the address")
            return
        pool = self._pool_holding(o, o.failover, slot, self.pools.of_subnet(site, network, subnet, slot.version),
                                  f"target VM network {network} subnet {subnet or '(none)'} at {site}", "failover")
        if pool is not None:
            slot.pool, slot.override = pool, o.failover

    def override_test_pool(self, slot: Slot, pools: list[StaticIpPool], site: str, network: str,
                           subnet: str) -> StaticIpPool:
        """The test pool of a slot: the test subnet's first pool, or the one holding its test override."""
        o = self._override(slot)
        if o is None or o.test is None:
            return pools[0]
        pool = self._pool_holding(o, o.test, slot, pools,
                                  f"test VM network {network} subnet {subnet or '(none)'} at {site}", "test")
        if pool is None:
            return pools[0]
        slot.test_override = o.test
        return pool

    def _pool_holding(self, o: AddressOverride, address: str, slot: Slot, pools: list[StaticIpPool],
                      where: str, purpose: str) -> StaticIpPool | None:
        version, value = to_int(address)
        if version != slot.version:
            self.refusals.add(_refusal(
                v.OVERRIDE_FAMILY_MISMATCH, o, purpose,
                f"{purpose} override {address} is IPv{version}, the IP configuration is IPv{slot.version} "
                f"({slot.source})", address=address))
            return None
        for pool in pools:
            if self.pools.in_range(pool, value):
                return pool
        self.refusals.add(_refusal(
            v.OVERRIDE_OUTSIDE_POOL, o, purpose,
            f"{purpose} override {address} is outside the static IP pool{'s' if len(pools) != 1 else ''} of "
            f"{where}: {', '.join(_pool_text(p) for p in pools)}",
            address=address, pool=", ".join(p.name for p in pools), site=pools[0].site if pools else ""))
        return None

    # ------------------------------------------------------------------ allocation

    def allocate_pool(self, pool: StaticIpPool, group: list[Slot], requests: list[AddressRequest], *,
                      test: bool) -> AllocationResult:
        """``allocate`` for one pool, the slots with an override getting exactly their address."""
        grants = self.idx.grants_by_pool.get((pool.site, pool.name), ())
        pinned = {s.key: a for s in group if (a := s.test_override if test else s.override) is not None}
        if not pinned:
            return allocate(pool, requests, grants)
        purpose = "test" if test else "failover"
        holders = dict(grants)
        checker = PoolAllocator(pool)
        result: dict[Hashable, Allocation] = {}
        claimed: dict[str, Slot] = {}
        owners = set()
        for s, r in zip(group, requests, strict=True):
            address = pinned.get(s.key)
            if address is None:
                continue
            o = self.overrides[_key(s)]
            owners.add(r.owner)
            held, holder = holders.get(address), self._holder(pool, address, o.vm)
            fields = {"address": address, "pool": pool.name, "site": pool.site}
            at = f"in pool {pool.name} at {pool.site}"
            if checker.is_reserved(to_int(address)[1]):
                self.refusals.add(_refusal(v.OVERRIDE_RESERVED, o, purpose,
                                           f"{purpose} override {address} is in the reserved set of pool "
                                           f"{pool.name} at {pool.site}", **fields))
            elif address in claimed:
                first = claimed[address]
                self.refusals.add(_refusal(v.OVERRIDE_DUPLICATE, o, purpose,
                                           f"{purpose} override {address} {at} is also the override of "
                                           f"{first.label}", **fields))
            elif held is not None and held != r.owner:
                self.refusals.add(_refusal(v.OVERRIDE_TAKEN, o, purpose,
                                           f"{purpose} override {address} {at} is granted to another NIC "
                                           f"({self._nic_name(held)})", **fields))
            elif holder is not None:
                self.refusals.add(_refusal(v.OVERRIDE_TAKEN, o, purpose,
                                           f"{purpose} override {address} {at} is the address of VM {holder}",
                                           **fields))
            claimed.setdefault(address, s)
            result[r.key] = Allocation(r.key, address, existing=held is not None and held == r.owner,
                                       preferred=True)
        rest = [r for r in requests if r.key not in result]
        for s, r in zip(group, requests, strict=True):
            if r.key not in result and r.preferred in claimed and s.strategy == "retain" and not test:
                o = self.overrides[_key(claimed[r.preferred])]
                self.refusals.add(_refusal(v.OVERRIDE_TAKEN, o, purpose,
                                           f"failover override {r.preferred} in pool {pool.name} at {pool.site} "
                                           f"is the address {s.label} keeps (ip_strategy retain)",
                                           address=r.preferred, pool=pool.name, site=pool.site))
        # The others are served with the pinned addresses taken, so none of them gets one.
        seen = {a for a, _ in grants}
        others = [(a, _PINNED if a in claimed else owner) for a, owner in grants]
        others += [(a, _PINNED) for a in claimed if a not in seen]
        served = allocate(pool, rest, others) if rest else AllocationResult({}, ())
        unused = [*served.unused_grants]
        requesting = {r.owner for r in rest}
        unused += [(a, owner) for a, owner in grants
                   if owner in owners and owner not in requesting and a not in claimed]
        allocations = {**result, **served.allocations}
        return AllocationResult({r.key: allocations[r.key] for r in requests}, tuple(unused))

    def _holder(self, pool: StaticIpPool, address: str, vm: str) -> str | None:
        """Another VM on the pool's VM network that has ``address`` as a static address now (on
        other networks the same address may be another's: WNV and isolated test networks overlap)."""
        held = self._addresses_held.get((pool.site, pool.vm_network))
        if held is None:
            held = self._addresses_held[(pool.site, pool.vm_network)] = {}
            for other in self.idx.vms_by_site.get(pool.site, ()):
                for nic in other.nics:
                    if nic.vm_network == pool.vm_network:
                        for c in nic.ip_configurations:
                            if c.address is not None:
                                held.setdefault(c.address, other.name)
        holder = held.get(address)
        return None if holder is None or holder in (vm, name_test_vm(vm)) else holder

    def _nic_name(self, nic_id: str) -> str:
        for vm in self.idx.inventory.vms:
            for nic in vm.nics:
                if nic.id == nic_id:
                    return f"VM {vm.name} NIC {nic.name}"
        return f"NIC id {nic_id}"

    # ------------------------------------------------------------------ leftovers

    def refuse_unused_overrides(self, slots: list[Slot]) -> None:
        """An override of a VM of this plan that no slot took up is refused, saying why: it names a
        NIC or IP configuration the VM does not have, a DHCP one, or (testing) a NIC without test network."""
        if not self.overrides:
            return
        by_key = {_key(s): s for s in slots}
        vms = {vm.name: vm for vm in self.vms}
        for key, o in self.overrides.items():
            vm = vms.get(o.vm)
            if vm is None:
                continue
            slot = by_key.get(key)
            if slot is not None:
                use = slot.nic.mapping
                target = self._test_targets.get((use.index, use.reverse))
                if (self.test and o.test is not None and slot.test_pool is None
                        and target is not None and target.mode == "none"):
                    self.refusals.add(_refusal(
                        v.OVERRIDE_NOT_APPLICABLE, o, "test",
                        f"test override {o.test} cannot apply: the NIC's test network is 'none' "
                        f"(network_mappings[{slot.nic.mapping.index}].test_network), its test VM NIC is not connected",
                        address=o.test))
                continue
            found = self._why_no_slot(vm, o)
            if found:
                field, why = found
                self.refusals.add(_refusal(v.OVERRIDE_NOT_APPLICABLE, o, "failover" if o.failover else "test", why,
                                           field=field))

    def _why_no_slot(self, vm: VmWork, o: AddressOverride) -> tuple[str, str] | None:
        """(the override's field at fault, why) -- None when another refusal already says why."""
        nic = vm.primary.nic(o.nic)
        if nic is None:
            have = ", ".join(n.name for n in vm.primary.nics) or "none"
            return "nic", f"VM {o.vm} has no NIC named {o.nic!r} (its NICs: {have})"
        if o.ip_configuration >= len(nic.ip_configurations):
            n = len(nic.ip_configurations)
            return "ip_configuration", (f"NIC {o.nic} has {n} IP configuration{'s' if n != 1 else ''}; "
                                        f"{o.ip_configuration} is not one of them")
        if nic.ip_configurations[o.ip_configuration].mode == "dhcp":
            return "ip_configuration", (f"IP configuration {o.ip_configuration} of NIC {o.nic} uses DHCP: "
                                        f"the agent does not set its address")
        work = next((n for n in vm.nics if n.name == o.nic), None)
        if work is not None and work.mapping.mapping.ip_strategy == "dhcp":
            return "nic", (f"network_mappings[{work.mapping.index}] has ip_strategy dhcp: the agent does not "
                           f"set the addresses of NIC {o.nic}")
        return None  # the NIC itself was refused (no mapping, no replica NIC ...): that refusal says why
