"""Routers of kind ``script`` (:class:`ScriptRoutes`): the operator's script, run by the constant
wrapper at the router's endpoint over :class:`SimRemote`, against the simulated routers. The
same calls give what :class:`SimRoutes` gives; every change is confirmed by a read of its own;
an answer that is not the documented document is a permanent error naming router and script."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.config import Endpoint, Router
from agent.drivers.ps.routerscript import RouterScriptAnswer, RouterScriptError, ScriptRoutes
from agent.drivers.remoting import PsScript, script_dir
from agent.drivers.sim import SimWorld
from agent.errors import AgentError
from tests.remotesim import SimRemote, Target
from tests.rigs import normalised
from tests.unit.conftest import TWO_SITES
from tests.unit.test_ps_routes import ROUTERS, plain, route, scenario

SCHEMA = json.loads((script_dir() / "routes" / "router-script.schema.json").read_text(encoding="utf-8"))


class Recording(SimRemote):
    """Also keeps the timeout each run was given."""

    timeouts: list[float | None]

    def run(self, endpoint: Endpoint, script: PsScript, parameters: Any, *, timeout_s: float | None = None) -> Any:
        self.__dict__.setdefault("timeouts", []).append(timeout_s)
        return super().run(endpoint, script, parameters, timeout_s=timeout_s)


def router(name: str, path: str = "cisco.ps1") -> Router:
    return Router.model_validate({
        "name": name, "kind": "script", "script": {"path": path, "parameters": {"Device": f"{name}-dev"},
                                                   "timeout_s": 45},
        "endpoint": {"transport": "psrp", "address": f"{name}.sim.test", "username": "agent", "auth": "basic",
                     "ssl": False, "credential": "env:FA_SIM_PASSWORD"}})


def remote_for(world: SimWorld) -> Recording:
    return Recording(world, {f"{r}.sim.test": Target("router", site, r) for r, site in ROUTERS.items()})


def scripted(remote: SimRemote, root: Path | None = None, path: str = "cisco.ps1") -> ScriptRoutes:
    return ScriptRoutes(remote, [router(r, path) for r in ROUTERS], script_root=root)


def runs(remote: SimRemote) -> list[dict[str, Any]]:
    return [json.loads(params["ParametersJson"]) for _, _, params in remote.calls]


def test_every_method_matches_the_simulated_driver(tmp_path: Path) -> None:
    sim_world = SimWorld.open(TWO_SITES, tmp_path / "sim.json")
    ps_world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    remote = remote_for(ps_world)
    expected = plain(scenario(sim_world.routes()))
    got = plain(scenario(scripted(remote)))
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"call {i} of the scenario"
    assert normalised(ps_world.snapshot()) == normalised(sim_world.snapshot())
    assert {name for _, name, _ in remote.calls} == {"scripts/Invoke-AgentPlanScript"}
    assert set(remote.timeouts) == {45}, "each run is bounded by the router's script.timeout_s"


def test_the_route_arrives_as_bound_parameters_and_each_change_is_read_back(tmp_path: Path) -> None:
    (tmp_path / "cisco.ps1").write_text("param($Action) # the operator's script\n", encoding="utf-8")
    remote = remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json"))
    routes = scripted(remote, root=tmp_path)
    [added] = routes.announce([route("rtr-b", "172.16.1.0/24", hop="10.1.0.1", metric=30)])
    assert added.ok and added.changed and added.value == route("rtr-b", "172.16.1.0/24", hop="10.1.0.1", metric=30)
    [again] = routes.announce([route("rtr-b", "172.16.1.0/24", hop="10.1.0.1", metric=30)])
    assert again.ok and not again.changed
    assert runs(remote)[:2] == [
        {"Device": "rtr-b-dev", "Action": "add", "Router": "rtr-b", "Prefix": "172.16.1.0/24",
         "NextHop": "10.1.0.1", "Interface": "", "Metric": 30},
        {"Device": "rtr-b-dev", "Action": "read", "Router": "rtr-b", "Prefix": "172.16.1.0/24",
         "NextHop": "", "Interface": "", "Metric": 0}]
    # The script travels as data: its text when the agent has the file, never spliced.
    _, _, first = remote.calls[0]
    assert (first["ScriptText"], first["ScriptPath"]) == ("param($Action) # the operator's script\n", "")
    assert first["Key"] == "rtr-b:cisco.ps1"


def test_a_script_the_agent_lacks_runs_from_the_hosts_disk(tmp_path: Path) -> None:
    remote = remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json"))
    scripted(remote, root=tmp_path, path="C:/routers/cisco.ps1").read_routes("rtr-a")
    [(_, _, params)] = remote.calls
    assert (params["ScriptText"], params["ScriptPath"]) == ("", "C:/routers/cisco.ps1")
    assert json.loads(params["ParametersJson"])["Prefix"] == "", "no prefix: read every route"


@pytest.mark.parametrize(("path", "said"), [
    ("cisco-malformed.ps1", "routes: Input should be a valid list"),
    ("cisco-silent.ps1", "printed nothing"),
])
def test_a_malformed_answer_is_a_permanent_error_naming_router_and_script(tmp_path: Path, path: str,
                                                                          said: str) -> None:
    routes = scripted(remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json")), path=path)
    for call in (lambda: routes.read_routes("rtr-a"),
                 lambda: routes.announce([route("rtr-a", "10.5.0.0/16", hop="10.0.0.9")])):
        with pytest.raises(RouterScriptError) as caught:
            call()
        error = caught.value
        assert error.code == "router_script_error" and error.category == "permanent"
        assert f"the script {path} of router rtr-a" in error.message and said in error.message
        assert error.fields == {"router": "rtr-a", "path": path}


def test_a_script_that_claims_a_change_it_did_not_make_is_not_believed(tmp_path: Path) -> None:
    world = SimWorld.open(TWO_SITES, tmp_path / "ps.json")
    routes = scripted(remote_for(world), path="cisco-liar.ps1")
    [added] = routes.announce([route("rtr-b", "172.16.1.0/24", dev="vlan20")])
    assert not added.ok and added.error is not None and added.error.code == "route_not_visible"
    [removed] = routes.withdraw([route("rtr-a", "192.168.1.0/24", dev="vlan10")])
    assert removed.error is not None and removed.error.code == "route_still_present"
    assert world.routes().read_routes("rtr-b") == []


def test_a_script_that_throws_fails_its_item_or_its_read(tmp_path: Path) -> None:
    routes = scripted(remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json")), path="cisco-broken.ps1")
    [failed] = routes.announce([route("rtr-b", "172.16.1.0/24", dev="vlan20")])
    assert failed.error is not None and failed.error.code == "script_failed"
    assert "connection to the device refused" in failed.error.message
    with pytest.raises(AgentError) as caught:
        routes.probe("rtr-b")
    assert caught.value.code == "script_failed" and caught.value.category == "permanent"


def test_refused_before_anything_is_sent(tmp_path: Path) -> None:
    remote = remote_for(SimWorld.open(TWO_SITES, tmp_path / "ps.json"))
    routes = scripted(remote)
    with pytest.raises(AgentError) as network:
        routes.announce([route("rtr-a", "10.0.0.0/8")])  # an announced network: not a static route
    assert network.value.code == "invalid_request"
    with pytest.raises(AgentError) as two:
        routes.withdraw([route("rtr-a", "10.0.0.0/8", dev="x"), route("rtr-b", "10.0.0.0/8", dev="x")])
    assert two.value.code == "invalid_request"
    with pytest.raises(AgentError) as bad:
        routes.read_routes("rtr-a", ["not-a-prefix"])
    assert bad.value.code == "invalid_request"
    with pytest.raises(AgentError) as unknown:
        routes.probe("rtr-zz")
    assert unknown.value.code == "not_found"
    assert remote.calls == []
    with pytest.raises(ValueError, match="not of kind script"):
        ScriptRoutes(remote, [Router(name="rtr-a", kind="netroute")])


@pytest.mark.parametrize("document", [
    {"schema": "routes/router-script/1"},
    {"schema": "routes/router-script/1", "changed": True, "routes": [
        {"prefix": "10.0.0.0/8", "next_hop": "10.0.0.1", "interface": None, "metric": 10}]},
    {"schema": "routes/router-script/1", "routes": [], "error": {"code": "route_conflict", "message": "not ours"}},
])
def test_the_schema_file_and_the_driver_accept_the_same_documents(document: dict[str, Any]) -> None:
    jsonschema.validate(document, SCHEMA)
    RouterScriptAnswer.model_validate(document)


@pytest.mark.parametrize("document", [
    {"routes": []},
    {"schema": "routes/router-script/2"},
    {"schema": "routes/router-script/1", "routes": "all good"},
    {"schema": "routes/router-script/1", "route": []},
    {"schema": "routes/router-script/1", "routes": [{"prefix": "10.0.0.0/8", "metric": 70000}]},
    {"schema": "routes/router-script/1", "error": {"code": "Not A Code", "message": "x"}},
])
def test_the_schema_file_and_the_driver_refuse_the_same_documents(document: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, SCHEMA)
    with pytest.raises(ValueError):
        RouterScriptAnswer.model_validate(document)


def test_the_example_script_keeps_the_contract() -> None:
    """The Cisco IOS example parses as Windows PowerShell, binds every cmdlet the catalog knows
    (Posh-SSH's are not in it), declares every parameter the agent binds and prints the document."""
    from agent.configrefs import ROUTER_SCRIPT_PARAMETERS
    from tests import pscheck

    path = Path(__file__).resolve().parents[2] / "docs" / "examples" / "router-scripts" / "Invoke-CiscoIosRoute.ps1"
    findings = pscheck.check_file(path, path.parent)
    assert {f.problem for f in findings} <= {"unknown cmdlet: not in the catalog"}, findings
    assert {f.command for f in findings} <= {"New-SSHSession", "New-SSHShellStream", "Invoke-SSHStreamShellCommand",
                                             "Remove-SSHSession"}
    declared = {p.name for p in pscheck.script_parameters(path.read_bytes())}
    assert set(ROUTER_SCRIPT_PARAMETERS) <= declared
    text = path.read_text(encoding="utf-8")
    assert "schema = 'routes/router-script/1'" in text and "ConvertTo-Json" in text
    assert "-ErrorOnUntrusted" in text, "an unknown host key must fail, never prompt"


class Answering:
    """A Remote at which the wrapper reports that the operator's script printed ``output``."""

    def __init__(self, output: str, items: int = 1) -> None:
        self.output, self.items = output, items

    def run(self, endpoint: Endpoint, script: PsScript, parameters: Any, *, timeout_s: float | None = None) -> Any:
        item = {"key": parameters["Key"], "changed": True, "before": None, "error": None,
                "after": {"output": self.output, "errors": []}}
        return {"schema": script.schema_id, "items": [item] * self.items}

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("output", "said"), [
    ('{"schema": "routes/router-script/1", "routes": [], "error": {"code": "access_denied", "message": "no"}}',
     "refused to read: no (access_denied)"),
    ('{"schema": "routes/router-script/1", "routes": [{"prefix": "10.0.0.1/8"}]}', "a route that is not one"),
    ("rtr# show ip route\nnot json at all", "not the documented document"),
])
def test_a_read_the_script_refuses_or_garbles_is_an_error_naming_it(output: str, said: str) -> None:
    routes = ScriptRoutes(Answering(output), [router("rtr-a")])  # type: ignore[arg-type]
    with pytest.raises(RouterScriptError) as caught:
        routes.read_routes("rtr-a", ["10.0.0.0/8"])
    assert said in caught.value.message and "the script cisco.ps1 of router rtr-a" in caught.value.message


def test_a_wrapper_answering_two_items_for_one_run_is_not_trusted() -> None:
    routes = ScriptRoutes(Answering('{"schema": "routes/router-script/1"}', items=2), [router("rtr-a")])  # type: ignore[arg-type]
    with pytest.raises(RouterScriptError, match="answered 2 items for one run"):
        routes.read_routes("rtr-a")


def test_a_refusal_by_the_script_is_the_items_error_and_nothing_is_read_back() -> None:
    output = '{"schema": "routes/router-script/1", "error": {"code": "route_conflict", "message": "not ours"}}'
    routes = ScriptRoutes(Answering(output), [router("rtr-a")])  # type: ignore[arg-type]
    [refused] = routes.withdraw([route("rtr-a", "10.0.0.0/8", hop="10.0.0.1")])
    assert refused.error is not None and (refused.error.code, refused.error.message) == ("route_conflict", "not ours")
