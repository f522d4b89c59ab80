"""Recovery-plan scripts through PowerShell: :class:`PsScripts` + the wrapper's handler over
:class:`SimRemote` against the simulated runner -- the same results, the operator's script and
its values sent as data (the text sent never changes), failures kept with their message, and the
demo's script step run end to end through the engine with what it printed in the journal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import Endpoint
from agent.configfile import load_config
from agent.drivers.ps.scripts import PsScripts, document_of
from agent.drivers.remoting import PsScript, load_script
from agent.drivers.sim import SimWorld
from agent.engine.model import OperationKind, OperationView, OpStatus
from agent.engine.service import Engine
from agent.engine.store import Store
from agent.errors import NotFoundError
from agent.ports import ScriptResult
from agent.wiring import connect
from tests.integration.test_wire_hostile_values import HOSTILE
from tests.remotesim import SimRemote, Target, over_psrp, sim_remote
from tests.rigs import ACTOR, DEMO_PLAN, copy_demo, no_sleep, normalised
from tests.unit.conftest import TWO_SITES

HOSTS = {"site-a": ("hv-a1", "hv-a2"), "site-b": ("hv-b1", "hv-b2")}
WRAPPER = "scripts/Invoke-AgentPlanScript"


def endpoint(host: str) -> Endpoint:
    return Endpoint(transport="psrp", address=f"{host}.sim.test", username="agent", auth="basic", ssl=False,
                    credential="env:FA_SIM_PASSWORD")


class Recording(SimRemote):
    """A SimRemote that also keeps the script text of every call, as the wire would carry it."""

    def __init__(self, world: SimWorld) -> None:
        super().__init__(world, {f"{h}.sim.test": Target("hyperv", s, h) for s, hs in HOSTS.items() for h in hs})
        self.texts: list[str] = []

    def run(self, endpoint: Endpoint, script: PsScript, parameters: Any, *, timeout_s: float | None = None) -> Any:
        self.texts.append(script.text)
        return super().run(endpoint, script, parameters, timeout_s=timeout_s)


def ps_scripts(remote: SimRemote, root: Path | None = None) -> PsScripts:
    return PsScripts(remote, {h: endpoint(h) for hs in HOSTS.values() for h in hs}, script_root=root)


def seen(result: ScriptResult) -> tuple[Any, ...]:
    return result.host, result.path, result.succeeded, result.output, result.error


def test_runs_match_the_simulated_runner(tmp_path: Path) -> None:
    sim_world = SimWorld.open(TWO_SITES, tmp_path / "sim.json")
    ps_world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    ps = ps_scripts(Recording(ps_world))
    for world in (sim_world, ps_world):
        world.inject({"call": "script.run", "target": "hv-b2", "fault": "permanent"})
    runs: list[tuple[str, str, dict[str, Any]]] = [
            ("hv-a1", r"C:\DR\Check.ps1", {"Url": "http://app/health", "Retries": 3, "Strict": True}),
            ("hv-b1", r"C:\DR\Empty.ps1", {}),
            ("hv-b2", r"C:\DR\Check.ps1", {"Url": "x"})]
    for host, path, parameters in runs:
        expected = sim_world.scripts().run_script(host, path, parameters, 60)
        got = ps.run_script(host, path, parameters, 60)
        assert seen(got) == seen(expected)
        # What it printed is kept as printed; its JSON document is its last line.
        expected_stdout = expected.stdout + (json.dumps(expected.output) + "\n" if expected.succeeded else "")
        assert got.stdout == expected_stdout
    assert normalised(ps_world.snapshot()) == normalised(sim_world.snapshot())


def test_a_failing_script_keeps_its_message_and_the_probe_runs_nothing(tmp_path: Path) -> None:
    world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    remote = Recording(world)
    world.inject({"call": "script.run", "target": "hv-a2", "fault": "permanent"})
    result = ps_scripts(remote).run_script("hv-a2", r"C:\DR\Fail.ps1", {}, 60)
    assert not result.succeeded and result.error and "injected" in result.error
    assert "Agent.script_failed" in result.stderr

    assert "hv-a1" in ps_scripts(remote).probe("hv-a1")
    assert [name for _, name, _ in remote.calls][-1] == "common/Test-AgentEndpoint"


def test_unknown_host_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    remote = Recording(SimWorld.open(TWO_SITES, tmp_path / "ps.json"))
    with pytest.raises(NotFoundError, match="hv-zz"):
        ps_scripts(remote).run_script("hv-zz", "x.ps1", {}, 60)
    with pytest.raises(NotFoundError):
        ps_scripts(remote).probe("hv-zz")
    assert remote.calls == []


def test_the_text_sent_is_constant_and_hostile_values_arrive_intact(tmp_path: Path) -> None:
    remote = Recording(SimWorld.open(TWO_SITES, tmp_path / "ps.json"))
    (tmp_path / "ops").mkdir()
    operator = "[CmdletBinding()]\nparam([string] $Name, [string] $Context)\n\"got $Name\"\n"
    (tmp_path / "ops" / "Check.ps1").write_text(operator, encoding="utf-8")
    ps = ps_scripts(remote, tmp_path)
    for value in HOSTILE:
        parameters = {"Name": value, "Context": json.dumps({"plan": value})}
        assert ps.run_script("hv-a1", "ops/Check.ps1", parameters, 60).succeeded
        assert ps.run_script("hv-a1", r"C:\on\the\host.ps1", parameters, 60).succeeded
    assert set(remote.texts) == {load_script(WRAPPER).text}
    read, remote_path = remote.calls[-2][2], remote.calls[-1][2]
    # A script the agent has is sent as its text; one only the host has, by its path.
    assert (read["ScriptText"], read["ScriptPath"]) == (operator, "")
    assert (remote_path["ScriptText"], remote_path["ScriptPath"]) == ("", r"C:\on\the\host.ps1")
    bound = [json.loads(p["ParametersJson"]) for _, _, p in remote.calls]
    assert bound == [{"Name": v, "Context": json.dumps({"plan": v})} for v in HOSTILE for _ in (1, 2)]


def test_document_of_takes_the_last_line_only_when_it_is_a_json_object() -> None:
    assert document_of('hello\n{"a": 1}\n\n') == {"a": 1}
    assert document_of('{"a": 1}\nthen more\n') == {}
    assert document_of("[1, 2]\n") == {} and document_of("{not json\n") == {} and document_of("") == {}


def through_pauses(engine: Engine, view: OperationView) -> OperationView:
    for _ in range(50):
        if view.status != OpStatus.WAITING.value:
            return view
        view = engine.resume(view.id, actor=ACTOR)
    raise AssertionError(f"{view.id} keeps waiting: {view.waiting_for}")


@pytest.mark.parametrize("fails", [False, True], ids=["kept", "fails"])
def test_the_demo_script_step_runs_through_powershell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      fails: bool) -> None:
    monkeypatch.setenv("FA_SIM_PASSWORD", "not-used-in-process")
    loaded = load_config(copy_demo(tmp_path / "config", edit=over_psrp(("hyperv",))))
    remote = sim_remote(loaded)
    if fails:
        remote.world.inject({"call": "script.run", "fault": "permanent"})
    with connect(loaded, remotes={"psrp": remote}) as connection:
        assert isinstance(connection.ports.scripts, PsScripts)
        store = Store.for_path(tmp_path / "agent.sqlite")
        try:
            engine = Engine(loaded.config, connection.ports, store, sleep=no_sleep)
            op = through_pauses(engine, engine.start(OperationKind.TEST_FAILOVER, DEMO_PLAN))
            [step] = [s for s in engine.journal.steps(op.id) if s.action == "script"]
        finally:
            store.close()
    [item] = step.outcome["items"]
    if fails:
        assert op.status == OpStatus.FAILED.value
        assert item["error"]["code"] == "script_failed" and "injected" in item["error"]["message"]
        assert "injected" in item["value"]["error"]
    else:
        assert op.status == OpStatus.SUCCEEDED.value
        kept = item["value"]
        assert "Url = http://app01.corp.contoso.example/health\n" in kept["stdout"]
        bound = kept["output"]["parameters"]
        assert bound["Url"] == "http://app01.corp.contoso.example/health"
        context = json.loads(bound["Context"])
        assert (context["plan"], context["kind"], context["direction"]) == (
            DEMO_PLAN, "test_failover", {"from": "contoso-east", "to": "contoso-west"})
        assert {v["name"] for v in context["vms"]} == {"sql01", "app01", "app02", "web01"}
        assert all(a["new"] for v in context["vms"] for a in v["addresses"])
