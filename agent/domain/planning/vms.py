"""VMs and mappings: which VMs a recovery plan moves, which way, and where their NICs connect.

Each NIC's network mapping is resolved to a target network and subnet, and each static address
to a slot with a target pool.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC
from functools import partial

from agent.config import RecoveryPlan
from agent.domain import validation as v
from agent.domain.ipam import to_int
from agent.domain.matching import Names
from agent.domain.model import Isolation, Nic, VmNetwork, name_test_vm
from agent.domain.plan import PlannedVm
from agent.domain.planning.overrides import OverridePlanning
from agent.domain.planning.work import MappingUse, NicWork, Slot, VmWork
from agent.domain.recovery import LATEST, resolve_point
from agent.domain.validation import Refusal


def choose_subnet(candidates: Sequence[str], source_subnet: str | None) -> str | None:
    """The mapping rule of the source documents: the target subnet with the source subnet's
    name, else the first target subnet (None: the target network has none)."""
    if source_subnet is not None and source_subnet in candidates:
        return source_subnet
    return candidates[0] if candidates else None


class VmResolution(OverridePlanning):
    def resolve_vms(self, recovery_plan: RecoveryPlan) -> None:
        directions: dict[tuple[str, str], list[str]] = defaultdict(list)
        self_registering = Names((vm, True) for vm in self.config.dns.self_registering_vms)
        pos = 0
        unreadable = dict(self.idx.inventory.unreadable)
        for g_index, group in enumerate(recovery_plan.groups):
            for name in group.vms:
                name = self.idx.vm_spelling.spelling(name) or name  # the inventory's spelling from here on
                if name in unreadable:
                    self._unreadable(name, unreadable[name])
                    continue
                rep = self.idx.replications.get(name)
                if rep is None:
                    if name in self.idx.vm_names:
                        self.refusals.add(v.vm_not_replicated(name))
                    else:
                        self.refusals.add(v.vm_not_found(name, nearest=self.idx.nearest_vm))
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
                self.vms.append(VmWork(
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

    def resolve_points(self, choice: str) -> None:
        """Each VM's recovery point for ``choice``, from the points its replica host lists; a VM
        without such a point is refused, naming the points it has."""
        for vm in self.vms:
            found = resolve_point(vm.name, choice, vm.replication.recovery_points)
            if isinstance(found, Refusal):
                self.refusals.add(found)
            elif found is not None:
                vm.planned = replace(vm.planned, recovery_point=found.name,
                                     recovery_point_at=found.created.astimezone(UTC).isoformat(),
                                     recovery_point_app_consistent=found.app_consistent)
        if choice != LATEST and self.config.agent.mode != "full":
            self.note(f"network-only mode: the orchestrator fails the VMs over; have it use recovery point "
                      f"{choice} (each VM's is shown here)")

    def _unreadable(self, name: str, why: str) -> None:
        """A VM whose state cannot be read: an unplanned failover goes on without it (the site
        is down; every VM it can bring up counts), anything else stops before changing anything."""
        self.excluded.append((name, why))
        if self.kind != "unplanned":
            self.refusals.add(v.vm_state_unreadable(name, why))
            return
        self.note(f"VM {name} is left out: its Hyper-V state cannot be read ({why}); the other VMs fail over "
                  "without it")

    def plan_nic(self, vm: VmWork, pos: int, nic: Nic) -> NicWork | None:
        """The replica NIC's connection and the slots of its static addresses; None when the NIC
        is left alone or refused."""
        target_site = vm.planned.target_site
        if nic.vm_network is None:
            self.note(f"VM {vm.name} NIC {nic.name} is not connected at {vm.planned.source_site}: nothing to do")
            return None
        replica_nic = vm.replica.nic(nic.name)
        if replica_nic is None:
            self.refusals.add(v.replica_nic_not_found(vm.name, nic.name, target_site))
            return None
        # A static configuration always has an address (IpConfiguration checks it).
        static = [(i, c.address) for i, c in enumerate(nic.ip_configurations)
                  if c.mode == "static" and c.address is not None]
        found = self._target_network(vm, nic, nic.vm_network, refuse_unmapped=bool(static))
        if found is None:
            return None
        use, target = found
        subnet = choose_subnet(self.idx.subnet_names(target_site, target), nic.vm_subnet) or ""
        if nic.vm_subnet and subnet != nic.vm_subnet:
            self.note(
                f"VM {vm.name} NIC {nic.name}: target network {target.name} has no subnet named "
                f"{nic.vm_subnet}; the replica connects to its first subnet {subnet or '(none)'}"
            )
        work = NicWork(vm=vm, name=nic.name, pos=pos, replica_nic=replica_nic, mapping=use, target=target,
                       target_subnet=subnet)
        vm.nics.append(work)
        self._check_wnv_pool(work)
        self._note_unmanaged(work, nic, has_static=bool(static))
        if use.mapping.ip_strategy != "dhcp":
            self._plan_slots(work, static)
        return work

    def _mapping(self, vm: VmWork, nic: Nic, network: str) -> MappingUse | None:
        site = vm.planned.source_site
        hit = self._forward.get((site, network))
        if hit is not None:
            return hit
        reverse = self._reverse.get((site, network), [])
        if len(reverse) > 1:
            self.refusals.add(v.ambiguous_reverse_mapping(
                vm.name, nic.name, network, site, [u.index for u in reverse]
            ))
            return None
        return reverse[0] if reverse else None

    def _target_network(
        self, vm: VmWork, nic: Nic, network: str, *, refuse_unmapped: bool
    ) -> tuple[MappingUse, VmNetwork] | None:
        """The mapping of the NIC's network and the network it leads to at the replica's site.
        An unmapped NIC without static addresses is only noted: DHCP serves it wherever it lands."""
        source_site, target_site = vm.planned.source_site, vm.planned.target_site
        use = self._mapping(vm, nic, network)
        if use is None:
            if (source_site, network) in self._reverse:
                return None  # ambiguous reverse mapping: refused in _mapping
            refusal = v.no_network_mapping(vm.name, nic.name, network, source_site)
            self.note(refusal.message)
            if refuse_unmapped:
                self.refusals.add(refusal)
            return None
        target_ref = use.mapping.source if use.reverse else use.mapping.target
        if target_ref.site != target_site:
            self.refusals.add(v.mapping_site_mismatch(vm.name, nic.name, target_ref.site, target_site, use.index))
            return None
        target = self.idx.networks.get((target_site, target_ref.vm_network))
        if target is None:
            self.refusals.group(
                (v.TARGET_NETWORK_NOT_FOUND, target_site, target_ref.vm_network),
                partial(v.target_network_not_found, target_ref.vm_network, target_site),
                f"{vm.name}/{nic.name}",
            )
            return None
        return use, target

    def _check_wnv_pool(self, work: NicWork) -> None:
        target, subnet = work.target, work.target_subnet
        if target.isolation == Isolation.WNV and not self.idx.pools_by_subnet.get((target.site, target.name, subnet)):
            self.refusals.group(
                (v.WNV_TARGET_WITHOUT_POOL, target.site, target.name, subnet),
                partial(v.wnv_target_without_pool, target.name, subnet, target.site),
                work.label,
            )

    def _note_unmanaged(self, work: NicWork, nic: Nic, *, has_static: bool) -> None:
        """DHCP addresses are the target DHCP server's business; the review should say whose."""
        use, target = work.mapping, work.target
        if use.mapping.ip_strategy == "dhcp" and has_static:
            self.note_group(
                ("dhcp-strategy", use.index),
                lambda items: f"network_mappings[{use.index}] says dhcp: static addresses of {items} are not "
                              f"managed (the target DHCP server must serve them)",
                work.label,
            )
        for i, c in enumerate(nic.ip_configurations):
            if c.mode == "dhcp":
                self.note_group(
                    ("dhcp", target.site, target.name),
                    lambda items: f"DHCP IP configurations are not managed; the DHCP server at {target.site} "
                                  f"must serve network {target.name}: {items}",
                    f"{work.label}#{i}",
                )

    def _plan_slots(self, work: NicWork, static: list[tuple[int, str]]) -> None:
        target, subnet, strategy = work.target, work.target_subnet, work.mapping.mapping.ip_strategy
        for ip_index, address in static:
            version, value = to_int(address)
            slot = Slot(key=(work.vm.pos, work.pos, ip_index), nic=work, ip_index=ip_index, version=version,
                        source=address, source_int=value, strategy=strategy)
            slot.pool = self.pools.for_address(target.site, target.name, subnet, version, value, strategy)
            self.override_failover_pool(slot, target.site, target.name, subnet)
            if slot.pool is None:
                self.refusals.group(
                    (v.NO_STATIC_POOL, target.site, target.name, subnet, version, "failover"),
                    partial(v.no_static_pool, target.name, subnet, target.site, version),
                    slot.label,
                )
            else:
                slot.retained = strategy == "retain" and self.pools.covers(slot.pool, version, value)
                if strategy == "retain" and not slot.retained:
                    self.note(
                        f"VM {work.vm.name} NIC {work.name}: retain, but target pool {slot.pool.name} "
                        f"({slot.pool.prefix}) does not cover {address}: the address changes"
                    )
            work.slots.append(slot)
