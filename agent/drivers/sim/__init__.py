"""The simulated sites: a strict, file-backed driver for every port of ``agent.ports``.

Used by the demo and by every test. It refuses what VMM, Hyper-V, a DNS server or a router
would refuse, each with the named error of ``agent.domain.errors``; it persists the world in a
state file (a snapshot and the changes appended since: :mod:`agent.drivers.sim.store`) shared
safely by several processes; it records every call; and it can be made slow (latency) or
unreliable (fault injection). ::

    world = SimWorld.open("inventory.yaml", "var/sim-state.json")
    vmm = world.vmm("site-b")                 # agent.ports.Vmm
    hv = world.hyperv("site-b")               # agent.ports.HyperV
    dns = world.dns("dns-main")               # agent.ports.Dns
    routes = world.routes()                   # agent.ports.Routes
    before = world.snapshot()
    ...
    assert len(world.calls("vmm.grant_ips")) == 1

The inventory format is described in :mod:`agent.drivers.sim.inventory`.
"""

from agent.drivers.sim.dns import SimDns
from agent.drivers.sim.errors import InjectedFault
from agent.drivers.sim.faults import FaultRule, Latency, LatencyModel, SimulationSpec
from agent.drivers.sim.hyperv import SimHyperV
from agent.drivers.sim.inventory import SimInventory, load_inventory, nic_id
from agent.drivers.sim.routes import SimRoutes
from agent.drivers.sim.store import StateFileError
from agent.drivers.sim.vmm import SimVmm
from agent.drivers.sim.world import CallRecord, SimWorld

__all__ = [
    "CallRecord",
    "FaultRule",
    "InjectedFault",
    "Latency",
    "LatencyModel",
    "SimDns",
    "SimHyperV",
    "SimInventory",
    "SimRoutes",
    "SimVmm",
    "SimWorld",
    "SimulationSpec",
    "StateFileError",
    "load_inventory",
    "nic_id",
]
