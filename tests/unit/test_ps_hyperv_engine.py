"""The demo's test failover and its cleanup through the engine, with the Hyper-V hosts on the
PowerShell driver (scripts answered by the simulated hosts over :class:`SimRemote`): the drill
builds its test VMs through the scripts, and the cleanup takes everything away again."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.configfile import load_config
from agent.drivers.ps.hyperv import PsHyperV
from agent.engine.model import OperationKind, OperationView, OpStatus
from agent.engine.service import Engine
from agent.engine.store import Store
from agent.wiring import connect
from tests.remotesim import over_psrp, sim_remote
from tests.rigs import ACTOR, DEMO_PLAN, copy_demo, no_sleep


def through_pauses(engine: Engine, view: OperationView) -> OperationView:
    for _ in range(50):
        if view.status != OpStatus.WAITING.value:
            return view
        view = engine.resume(view.id, actor=ACTOR)
    raise AssertionError(f"{view.id} keeps waiting: {view.waiting_for}")


def test_demo_drill_and_cleanup_with_hyperv_over_powershell(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FA_SIM_PASSWORD", "not-used-in-process")
    loaded = load_config(copy_demo(tmp_path / "config", edit=over_psrp(("hyperv",))))
    remote = sim_remote(loaded)
    world = remote.world
    with connect(loaded, remotes={"psrp": remote}) as connection:
        assert all(isinstance(hv, PsHyperV) for hv in connection.ports.hyperv.values())
        store = Store.for_path(tmp_path / "agent.sqlite")
        try:
            engine = Engine(loaded.config, connection.ports, store, sleep=no_sleep)
            before = world.snapshot()

            test = through_pauses(engine, engine.start(OperationKind.TEST_FAILOVER, DEMO_PLAN))
            during = world.snapshot()
            cleanup = through_pauses(engine, engine.start(OperationKind.CLEANUP_TEST, DEMO_PLAN,
                                                          parent_id=test.id))
        finally:
            store.close()

    assert (test.status, cleanup.status) == (OpStatus.SUCCEEDED.value, OpStatus.SUCCEEDED.value)
    assert {vm for vm in during["vms"]["contoso-west"] if vm.endswith(" - Test")} == {
        "sql01 - Test", "app01 - Test", "app02 - Test", "web01 - Test"}
    assert during["failover_configs"] == before["failover_configs"]
    assert world.snapshot() == before
    scripts = {name for _, name, _ in remote.calls}
    assert {"hyperv/Invoke-AgentReplicaAction", "hyperv/Set-AgentVMPower"} <= scripts
    replica_actions = [p["Action"] for _, name, p in remote.calls if name == "hyperv/Invoke-AgentReplicaAction"]
    assert "start_test" in replica_actions and "stop_test" in replica_actions
    # Every call went to the Hyper-V host it names, as its own endpoint.
    assert all(address == f"{p['ComputerName']}.sim.test" for address, name, p in remote.calls
               if name.startswith("hyperv/"))
    # The demo's recovery-plan script ran through the PowerShell wrapper, at the host it names.
    runs = [(address, p) for address, name, p in remote.calls if name == "scripts/Invoke-AgentPlanScript"]
    assert runs and all(address == f"{p['Key'].split(':', 1)[0]}.sim.test" for address, p in runs)
