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

import uuid
from pathlib import Path

from pydantic import Field, model_validator

from agent.drivers.sim.addresses import failover_setting_problem, ip_int, split_interface
from agent.drivers.sim.checks import cross_reference_problems
from agent.drivers.sim.dnsnames import canonical_value, fqdn, in_zone, record_fqdn
from agent.drivers.sim.faults import SimulationSpec
from agent.drivers.sim.specs import DnsServerSpec, RouterSpec, SiteSpec, Spec
from agent.yamlfile import load_model

__all__ = [
    # Defined here.
    "INVENTORY_PROBLEMS_MARK",
    "SimInventory",
    "load_inventory",
    "nic_id",
    # Their homes are the modules imported above; importing them from here keeps working.
    "canonical_value",
    "failover_setting_problem",
    "fqdn",
    "in_zone",
    "ip_int",
    "record_fqdn",
    "split_interface",
]

INVENTORY_PROBLEMS_MARK = "inventory cross-reference problems:\n"
"""Prefix of the ValueError that carries every cross-reference problem, one ``key: message``
per line, so ``load_model`` locates each one by line."""

NIC_ID_NAMESPACE = uuid.UUID("6f1f5c1e-3b8a-4d5e-9a57-0c2f1d6b7e41")


def nic_id(site: str, vm: str, nic: str) -> str:
    """The deterministic id the simulator gives a NIC the inventory names no id for."""

    return str(uuid.uuid5(NIC_ID_NAMESPACE, f"{site}/{vm}/{nic}"))


class SimInventory(Spec):
    """The whole simulated world, as written in the inventory YAML."""

    sites: list[SiteSpec] = Field(min_length=1)
    dns_servers: list[DnsServerSpec] = Field(default_factory=list)
    routers: list[RouterSpec] = Field(default_factory=list)
    simulation: SimulationSpec = SimulationSpec()

    @model_validator(mode="after")
    def _cross_references(self) -> SimInventory:
        problems = cross_reference_problems(self)
        if problems:
            # One ValueError carrying every problem; load_model splits it into located problems.
            raise ValueError(INVENTORY_PROBLEMS_MARK + "\n".join(problems))
        return self


def load_inventory(path: Path | str) -> SimInventory:
    """Parse and check an inventory file; ``InvalidFileError`` lists every problem with its line."""

    return load_model(path, SimInventory, cross_mark=INVENTORY_PROBLEMS_MARK)
