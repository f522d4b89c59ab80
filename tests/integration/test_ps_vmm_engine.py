"""The demo's test failover and its cleanup through the engine with every VMM server on the
PowerShell driver (scripts answered by ``tests/remotesim/vmm.py``): the same sites as with the
``sim`` driver, afterwards and in between, and nothing left behind."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from agent.configfile import LoadedConfig, load_config
from agent.drivers.ps.vmm import PsVmm
from agent.engine.model import OperationKind, OpStatus
from agent.engine.service import Engine
from agent.engine.store import Store
from agent.wiring import connect
from tests.remotesim import SimRemote, over_psrp, sim_remote
from tests.rigs import Rig, copy_demo, normalised

TEST = OperationKind.TEST_FAILOVER
CLEANUP = OperationKind.CLEANUP_TEST


@dataclass
class PsRig(Rig):
    """A rig whose ``psrp`` transport is a :class:`SimRemote` on the rig's own simulated world."""

    remote: SimRemote | None = None

    def _open(self) -> None:
        loaded = replace(self.loaded, simulator_state=self.state_path)
        self.connection = connect(loaded, remotes={"psrp": self._remote(loaded)})
        self.store = Store.for_path(self.store_path)
        self.engine = Engine(self.loaded.config, self.connection.ports, self.store, sleep=self.sleep,
                             crash_hook=self.crash_hook, scheduler=self.scheduler)

    def _remote(self, loaded: LoadedConfig) -> SimRemote:
        self.remote = sim_remote(loaded)
        return self.remote


def drill(rig: Rig) -> tuple[dict, dict, dict, str, str]:
    before = rig.world.snapshot()
    test = rig.start(TEST)
    during = rig.world.snapshot()
    cleanup = rig.start(CLEANUP, parent_id=test.id)
    return before, during, rig.world.snapshot(), test.status, cleanup.status


def test_a_drill_over_the_powershell_vmm_driver_matches_the_sim_driver(tmp_path: Path) -> None:
    ps_loaded = load_config(copy_demo(tmp_path / "ps", edit=over_psrp(("vmm",))))
    ps_rig = PsRig(ps_loaded, tmp_path / "ps" / "state.json", tmp_path / "ps" / "agent.sqlite")
    sim_loaded = load_config(copy_demo(tmp_path / "sim"))
    sim_rig = Rig(sim_loaded, tmp_path / "sim" / "state.json", tmp_path / "sim" / "agent.sqlite")
    try:
        assert all(isinstance(v, PsVmm) for v in ps_rig.ports.vmm.values())
        ps = drill(ps_rig)
        sim = drill(sim_rig)
        assert ps_rig.remote is not None
        scripts = {name for _, name, _ in ps_rig.remote.calls}
    finally:
        ps_rig.close()
        sim_rig.close()

    assert (ps[3], ps[4]) == (OpStatus.SUCCEEDED.value, OpStatus.SUCCEEDED.value)
    assert ps[1]["vm_networks"] != ps[0]["vm_networks"] and ps[1]["grants"] != ps[0]["grants"]
    assert normalised(ps[1]) == normalised(sim[1]), "the drill built what the sim driver builds"
    assert ps[2] == ps[0], "the cleanup took all of it away"
    assert {"vmm/Grant-AgentIPAddress", "vmm/New-AgentTestNetwork", "vmm/Set-AgentNicConnection",
            "vmm/Revoke-AgentIPAddress", "vmm/Remove-AgentTestNetwork"} <= scripts


FAULTS = [
    pytest.param({"call": "vmm.connect_nics", "target": "app01*", "fault": "permanent"}, id="one-nic-refused"),
    pytest.param({"call": "vmm.grant_ips", "fault": "transient", "count": 2}, id="grants-unreachable-twice"),
    pytest.param({"call": "vmm.grant_ips", "fault": "timeout", "applied": True, "count": 1},
                 id="grant-answer-lost-after-applied"),
    pytest.param({"call": "vmm.create_test_networks", "fault": "timeout", "applied": True, "count": 1},
                 id="network-answer-lost-after-applied"),
]


@pytest.mark.parametrize("rule", FAULTS)
def test_a_faulty_vmm_ends_the_drill_as_it_does_on_the_sim_driver(tmp_path: Path, rule: dict[str, Any]) -> None:
    ps_rig = PsRig(load_config(copy_demo(tmp_path / "ps", edit=over_psrp(("vmm",)))),
                   tmp_path / "ps" / "state.json", tmp_path / "ps" / "agent.sqlite")
    sim_rig = Rig(load_config(copy_demo(tmp_path / "sim")), tmp_path / "sim" / "state.json",
                  tmp_path / "sim" / "agent.sqlite")
    try:
        outcomes = []
        for rig in (ps_rig, sim_rig):
            rig.world.inject(rule)
            view = rig.start(TEST)
            errors = sorted((e.get("code"), e.get("key") or e.get("vm")) if isinstance(e, dict) else (str(e), None)
                            for e in view.errors)
            [(_, _, fired)] = rig.world.faults()
            assert fired > 0, "the fault really fired"
            outcomes.append((view.status, errors, normalised(rig.world.snapshot())))
        assert ps_rig.remote is not None and ps_rig.remote.calls, "VMM was reached through the scripts"
    finally:
        ps_rig.close()
        sim_rig.close()
    ps, sim = outcomes
    assert ps[0] == sim[0]
    assert ps[1] == sim[1], "the engine saw the same error for each item"
    assert ps[2] == sim[2], "and the sites ended the same"
