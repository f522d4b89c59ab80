"""Test networks: where a test failover connects its test VMs, and with which addresses.

Each mapping's test VMs join none, an existing isolated network, or a copy of the target network
the plan creates; production is never touched.
"""

from __future__ import annotations

from functools import partial

from agent.domain import validation as v
from agent.domain.model import Isolation, VmNetwork
from agent.domain.plan import ConnectNic, CreateTestNetwork, ReserveIp, name_test_network
from agent.domain.planning.overrides import OverridePlanning
from agent.domain.planning.vms import choose_subnet
from agent.domain.planning.work import MappingUse, NicWork, TestTarget


class TestNetworkPlanning(OverridePlanning):
    def plan_test_nic(self, work: NicWork) -> None:
        """Where the NIC's test VM twin connects, and a test pool for each of its static slots."""
        target = work.target
        test = self._test_target(work.mapping, target)
        if test.mode == "none":
            self.note_group(
                ("no-test-network", target.site, target.name),
                lambda items: f"no test network for {target.name}: the test VM NICs are not connected: {items}",
                work.label,
            )
            return
        if not test.usable:
            return
        replica_on_dhcp = not work.slots
        if test.isolation == Isolation.WNV:
            probe = v.incompatible_test_network(target=target, test_network=test.name,
                                                replica_on_dhcp=replica_on_dhcp, nics=[])
            if probe is not None:
                self.refusals.group(
                    (probe.code, target.site, target.name, test.name),
                    lambda nics: v.incompatible_test_network(target=target, test_network=test.name,
                                                             replica_on_dhcp=replica_on_dhcp, nics=nics),
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
        test_vm = self.idx.vms.get((site, work.vm.test_vm))
        work.test_nic = test_vm.nic(work.name) if test_vm is not None else None
        for slot in work.slots:
            pools = self.pools.of_subnet(site, test.name, work.test_subnet, slot.version)
            if not pools:
                self.refusals.group(
                    (v.NO_STATIC_POOL, site, test.name, work.test_subnet, slot.version, "test"),
                    partial(v.no_static_pool, test.name, work.test_subnet, site, slot.version, purpose="test"),
                    slot.label,
                )
                continue
            slot.test_pool = self.override_test_pool(slot, pools, site, test.name, work.test_subnet)

    def _test_target(self, use: MappingUse, target: VmNetwork) -> TestTarget:
        key = (use.index, use.reverse)
        cached = self._test_targets.get(key)
        if cached is not None:
            return cached
        option = use.mapping.test_network
        site = target.site
        mode = option.mode
        if use.reverse and mode == "existing":
            self.note(
                f"network_mappings[{use.index}] is used in reverse for {target.name} at {site}; its existing "
                f"test network {option.vm_network} is at the other site, so test VMs are not connected "
                f"(add a mapping from {use.mapping.target.site}/{use.mapping.target.vm_network} to choose one)"
            )
            mode = "none"
        if mode == "existing":
            name = option.vm_network
            assert name is not None  # TestNetworkOption requires vm_network with mode existing
            result = self._existing_test_target(site, name, use.index)
        elif mode == "create":
            result = self._created_test_target(site, name_test_network(target.name, self.plan_name), target)
        else:
            result = TestTarget(mode=mode)
        self._test_targets[key] = result
        return result

    def _existing_test_target(self, site: str, name: str, m_index: int) -> TestTarget:
        result = TestTarget(mode="existing", name=name)
        net = self.idx.networks.get((site, name))
        if net is None:
            self.refusals.add(v.missing_test_network(name, site, m_index))
            result.usable = False
        elif not v.is_isolated(net):
            self.refusals.add(v.unisolated_test_network(net.name, site, net.isolation.value, m_index))
            result.usable = False
        else:
            result.network, result.isolation = net, net.isolation
        return result

    def _created_test_target(self, site: str, name: str, target: VmNetwork) -> TestTarget:
        result = TestTarget(mode="create", name=name, isolation=Isolation.WNV)
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
        return result

    def _plan_test_network(self, site: str, name: str, target: VmNetwork) -> None:
        """A network to be created copies the target's pools with the same ranges (named like
        the VMM driver names them, ``<test network>/<pool>``), so the failover address is
        normally free there too."""
        self._add_once(CreateTestNetwork(site=site, name=name, copy_of=target.name))
        for pool in self.idx.pools_of_network.get((site, target.name), []):
            self.pools.add_planned(pool.model_copy(update={"name": f"{name}/{pool.name}", "vm_network": name}))
        self._planned_subnets[(site, name)] = self.idx.subnet_names(site, target)

    def _add_once(self, change: CreateTestNetwork) -> None:
        if change not in self._created:
            self._created.add(change)
            self.changes.append(change)

    def test_changes(self) -> None:
        # Test changes name the VM itself (``vm``) with purpose "test": they act on its test VM,
        # "<vm> - Test", which the engine derives (it exists only once the test has started).
        plen = self.pools.prefix_length
        for vm in self.vms:
            site = vm.planned.target_site
            for nic in vm.nics:
                if nic.test is None:
                    continue
                addresses = []
                for s in nic.slots:
                    if s.test_pool is None or s.test_address is None:
                        continue
                    self.changes.append(ReserveIp(
                        site=site, pool=s.test_pool.name, address=s.test_address, vm=vm.name, nic=nic.name,
                        # The test VM exists only once the test failover has started; until then
                        # its NIC id is unknown and the engine fills it in before granting.
                        nic_id=nic.test_nic.id if nic.test_nic else "",
                        ip_index=s.ip_index, purpose="test", source_address=s.source, existing=s.test_existing,
                        override=s.test_override is not None,
                    ))
                    addresses.append((s.test_address, plen(s.test_pool)))
                if not self._test_nic_connected(nic, addresses):
                    self.changes.append(ConnectNic(
                        site=site, vm=vm.name, nic=nic.name, vm_network=nic.test.name,
                        vm_subnet=nic.test_subnet, purpose="test", addresses=tuple(addresses),
                    ))

    @staticmethod
    def _test_nic_connected(nic: NicWork, addresses: list[tuple[str, int]]) -> bool:
        """The test VM's NIC is on the test network and subnet with exactly these static addresses."""
        tn, test = nic.test_nic, nic.test
        return (
            tn is not None and test is not None
            and tn.vm_network == test.name and (tn.vm_subnet or "") == nic.test_subnet
            and tuple((c.address, c.prefix_length) for c in tn.ip_configurations if c.mode == "static")
            == tuple(addresses)
        )
