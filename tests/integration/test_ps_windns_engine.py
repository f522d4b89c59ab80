"""The demo's test failover and its cleanup through the engine with every DNS server of kind
``windows`` (scripts answered by ``tests/remotesim/dns.py`` over :class:`SimRemote`): the records
the drill writes are the ones the ``sim`` driver writes, and the cleanup puts every one back."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.configfile import load_config
from agent.drivers.ps.windns import PsWindowsDns
from agent.engine.model import OperationKind, OperationView, OpStatus
from agent.engine.service import Engine
from agent.engine.store import Store
from agent.wiring import connect
from tests.remotesim import over_psrp, sim_remote
from tests.rigs import ACTOR, DEMO_PLAN, copy_demo, no_sleep, normalised


def through_pauses(engine: Engine, view: OperationView) -> OperationView:
    for _ in range(50):
        if view.status != OpStatus.WAITING.value:
            return view
        view = engine.resume(view.id, actor=ACTOR)
    raise AssertionError(f"{view.id} keeps waiting: {view.waiting_for}")


def drill(config: Path, store_path: Path, *, over_windows: bool) -> tuple[dict, dict, dict, str, str, set[str]]:
    loaded = load_config(config)
    remote = sim_remote(loaded)
    remotes = {"psrp": remote} if over_windows else {}
    with connect(loaded, remotes=remotes, reset_simulator=True) as connection:
        if over_windows:
            assert connection.ports.dns and all(isinstance(d, PsWindowsDns) for d in connection.ports.dns.values())
        world = connection.simulator if not over_windows else remote.world
        assert world is not None
        store = Store.for_path(store_path)
        try:
            engine = Engine(loaded.config, connection.ports, store, sleep=no_sleep)
            before = world.snapshot()
            test = through_pauses(engine, engine.start(OperationKind.TEST_FAILOVER, DEMO_PLAN))
            during = world.snapshot()
            cleanup = through_pauses(engine, engine.start(OperationKind.CLEANUP_TEST, DEMO_PLAN,
                                                          parent_id=test.id))
            after = world.snapshot()
        finally:
            store.close()
    return before, during, after, test.status, cleanup.status, {name for _, name, _ in remote.calls}


def test_demo_drill_and_cleanup_with_windows_dns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FA_SIM_PASSWORD", "not-used-in-process")
    ps = drill(copy_demo(tmp_path / "ps", edit=over_psrp(("dns",))), tmp_path / "ps.sqlite", over_windows=True)
    sim = drill(copy_demo(tmp_path / "sim"), tmp_path / "sim.sqlite", over_windows=False)

    assert (ps[3], ps[4]) == (OpStatus.SUCCEEDED.value, OpStatus.SUCCEEDED.value)
    assert ps[1]["record_sets"] != ps[0]["record_sets"], "the drill changed records"
    assert normalised(ps[1]) == normalised(sim[1]), "the drill wrote what the sim driver writes"
    assert ps[2] == ps[0], "the cleanup put every record back"
    assert {"dns/Set-AgentDnsRecord", "dns/Get-AgentDnsRecord"} <= ps[5]


@pytest.mark.parametrize("rule", [
    pytest.param({"call": "dns.apply", "fault": "transient", "count": 1}, id="one-record-times-out-once"),
    pytest.param({"call": "dns.read", "fault": "transient", "count": 2}, id="reads-unreachable-twice"),
])
def test_a_passing_dns_fault_ends_the_drill_as_on_the_sim_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  rule: dict) -> None:
    monkeypatch.setenv("FA_SIM_PASSWORD", "not-used-in-process")
    outcomes = []
    for over_windows in (True, False):
        where = tmp_path / ("ps" if over_windows else "sim")
        loaded = load_config(copy_demo(where, edit=over_psrp(("dns",)) if over_windows else None))
        remote = sim_remote(loaded)
        with connect(loaded, remotes={"psrp": remote} if over_windows else {}, reset_simulator=True) as connection:
            world = remote.world if over_windows else connection.simulator
            assert world is not None
            world.inject(rule)
            store = Store.for_path(where / "agent.sqlite")
            try:
                engine = Engine(loaded.config, connection.ports, store, sleep=no_sleep)
                test = through_pauses(engine, engine.start(OperationKind.TEST_FAILOVER, DEMO_PLAN))
            finally:
                store.close()
            [(_, _, fired)] = world.faults()
            assert fired > 0, "the fault really fired"
            outcomes.append((test.status, normalised(world.snapshot())))
    (ps_status, ps_world), (sim_status, sim_world) = outcomes
    assert ps_status == sim_status == OpStatus.SUCCEEDED.value
    assert ps_world == sim_world


def test_a_record_refused_mid_batch_is_cleaned_up_with_the_rest(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FA_SIM_PASSWORD", "not-used-in-process")
    loaded = load_config(copy_demo(tmp_path / "ps", edit=over_psrp(("dns",))))
    remote = sim_remote(loaded)
    with connect(loaded, remotes={"psrp": remote}, reset_simulator=True) as connection:
        world = remote.world
        before = world.snapshot()
        world.inject({"call": "dns.apply", "target": "app01*", "fault": "permanent"})
        store = Store.for_path(tmp_path / "agent.sqlite")
        try:
            engine = Engine(loaded.config, connection.ports, store, sleep=no_sleep)
            test = through_pauses(engine, engine.start(OperationKind.TEST_FAILOVER, DEMO_PLAN))
            assert test.status == OpStatus.FAILED.value
            assert any(isinstance(e, dict) and e.get("code") == "dns_batch_failed" for e in test.errors)
            world.clear_faults()
            cleanup = through_pauses(engine, engine.start(OperationKind.CLEANUP_TEST, DEMO_PLAN,
                                                          parent_id=test.id))
        finally:
            store.close()
    assert cleanup.status == OpStatus.SUCCEEDED.value
    assert world.snapshot()["record_sets"] == before["record_sets"], "every record the drill wrote is put back"


def test_a_drill_and_its_cleanup_with_windows_dns_over_the_wire(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """The DNS servers only on the wire: engine -> PsWindowsDns -> psrp -> pypsrp -> HTTP -> the
    PSRP test server -> tests/remotesim/dns.py; each script arrives as the shipped text."""
    from agent.drivers.remoting import load_script
    from tests.psrpserver import serving
    from tests.remotesim import targets_for
    from tests.rigs import Rig, Templates

    with serving(monkeypatch) as server:
        templates = Templates.build(copy_demo(tmp_path / "demo", edit=over_psrp(("dns",), port=server.port)))
        state, store = templates.copy_to(tmp_path / "rig")
        rig = Rig(templates.loaded, state, store)
        server.world, server.targets = rig.world, targets_for(templates.loaded.config)
        try:
            before = rig.world.snapshot()
            test = rig.start(OperationKind.TEST_FAILOVER)
            during = rig.world.snapshot()
            cleanup = rig.start(OperationKind.CLEANUP_TEST, parent_id=test.id)
            after = rig.world.snapshot()
        finally:
            rig.close()
    assert (test.status, cleanup.status) == (OpStatus.SUCCEEDED.value, OpStatus.SUCCEEDED.value), (
        test.errors, cleanup.errors)
    assert during["record_sets"]["dns-drill"] != before["record_sets"]["dns-drill"]
    assert after == before
    assert {server.targets[r.host].role for r in server.received} == {"dns"}
    texts = {r.script_text for r in server.received}
    assert load_script("dns/Set-AgentDnsRecord").text in texts and load_script("dns/Get-AgentDnsRecord").text in texts
