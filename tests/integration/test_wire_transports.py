"""The psrp and winrm transports against the wire-level test server (real pypsrp / pywinrm
clients, real HTTP(S) on 127.0.0.1), and the local transport against a fake powershell.exe."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import Endpoint
from agent.configfile import load_config
from agent.drivers.remoting import PsScript, RemoteScriptError, load_script, psrp
from agent.drivers.remoting.answers import ERROR_STREAM
from agent.drivers.remoting.local import LocalRemote
from agent.drivers.remoting.probe import probe_endpoints
from agent.drivers.remoting.psrp import PsrpRemote, RemoteAuthError
from agent.drivers.remoting.winrm import WinrmRemote
from agent.drivers.remoting.wrapper import ARGUMENTS
from agent.errors import AgentError, PermanentError, TimeoutError_, TransientError
from tests.psrpserver import PsrpTestServer, make_ca, serving
from tests.remotesim import ScriptFailed, Target, open_world, over_psrp, targets_for
from tests.rigs import Templates, copy_demo

PROBE = load_script("common/Test-AgentEndpoint")
ECHO = PsScript("test/Echo", "param($Name, $Count)\n'echo'", ("Name", "Count"))


def endpoint(server: PsrpTestServer, name: str = "vmm-hq", **extra: Any) -> Endpoint:
    fields: dict[str, Any] = {"transport": "psrp", "address": f"{name}.sim.test", "port": server.port,
                              "ssl": False, "auth": "basic", "username": "agent", "credential": "env:FA_SIM_PASSWORD"}
    return Endpoint.model_validate({**fields, **extra})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, demo: Templates) -> Iterator[PsrpTestServer]:
    with serving(monkeypatch) as found:
        found.world = open_world(demo.loaded)
        found.targets = {"vmm-hq.sim.test": Target("vmm", "hq", "hq"),
                         "hv-dr-01.sim.test": Target("hyperv", "dr", "hv-dr-01")}
        found.extra[ECHO.text] = lambda p: [json.dumps({"schema": "test/Echo/1", "items": [], "got": p})]
        yield found


@pytest.fixture(params=["psrp", "winrm"])
def remote(request: pytest.FixtureRequest) -> Any:
    made = PsrpRemote() if request.param == "psrp" else WinrmRemote()
    yield made
    made.close()


def test_the_probe_answers_from_the_endpoint_the_host_header_names(server: PsrpTestServer, remote: Any) -> None:
    vmm = remote.run(endpoint(server), PROBE, {})
    hv = remote.run(endpoint(server, "hv-dr-01"), PROBE, {"ModuleName": ["Hyper-V", "VirtualMachineManager"]})
    assert vmm["items"][0]["after"]["host_name"] == "HQ"
    assert hv["items"][0]["after"]["modules"] == [
        {"name": "Hyper-V", "available": True, "version": "1.0"},
        {"name": "VirtualMachineManager", "available": False, "version": None}]
    assert [r.host for r in server.received] == ["vmm-hq.sim.test", "hv-dr-01.sim.test"]
    assert all(r.script_text == PROBE.text for r in server.received)


def test_a_terminating_error_is_a_remote_script_error_with_its_id(server: PsrpTestServer, remote: Any) -> None:
    def fails(p: dict[str, Any]) -> list[Any]:
        raise ScriptFailed("VMNotFound,Get-SCVirtualMachine", "no VM app-01")

    server.extra[ECHO.text] = fails
    with pytest.raises(RemoteScriptError) as caught:
        remote.run(endpoint(server), ECHO, {"Name": "app-01"})
    assert caught.value.fields["fully_qualified_error_id"] == "VMNotFound,Get-SCVirtualMachine"
    assert "no VM app-01" in caught.value.message
    assert caught.value.category == "permanent"


def test_a_non_terminating_error_is_reported_with_the_answer(server: PsrpTestServer, remote: Any) -> None:
    class Warn(Exception):
        error_id = "DnsRecordBusy"

    server.extra[ECHO.text] = lambda p: [Warn("zone is being transferred"), json.dumps({"schema": "test/Echo/1"})]
    got = remote.run(endpoint(server), ECHO, {"Name": "x"})
    assert got["schema"] == "test/Echo/1"
    assert got[ERROR_STREAM] == [{"id": "DnsRecordBusy", "message": "zone is being transferred"}]


def test_a_one_megabyte_parameter_arrives_intact(server: PsrpTestServer, remote: Any) -> None:
    big = "é" + "x;$(a)`\n" * (1024 * 1024 // 8)
    got = remote.run(endpoint(server), ECHO, {"Name": big, "Count": 3})
    assert got["got"] == {"Name": big, "Count": 3}
    assert server.received[-1].parameters["Name"] == big


def test_a_wrong_password_is_refused_not_retried(server: PsrpTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FA_SIM_PASSWORD", "wrong")
    remote = PsrpRemote()
    try:
        with pytest.raises(RemoteAuthError):
            remote.run(endpoint(server), PROBE, {})
    finally:
        remote.close()


def test_a_connection_dropped_mid_call_is_transient_and_the_retry_succeeds(server: PsrpTestServer) -> None:
    remote = PsrpRemote()
    try:
        remote.run(endpoint(server), PROBE, {})  # the pool is open
        server.drop_commands = 1
        with pytest.raises(TransientError):
            remote.run(endpoint(server), PROBE, {})
        assert remote.run(endpoint(server), PROBE, {})["items"][0]["key"] == "endpoint"
    finally:
        remote.close()


def test_a_call_that_does_not_finish_in_time_is_a_timeout(server: PsrpTestServer, remote: Any) -> None:
    try:
        server.hold_output = True
        with pytest.raises(TimeoutError_) as caught:
            remote.run(endpoint(server), PROBE, {}, timeout_s=0.3)
        assert caught.value.transient
        server.hold_output = False
        assert remote.run(endpoint(server), PROBE, {})["items"][0]["key"] == "endpoint"
    finally:
        remote.close()


def test_an_unreachable_endpoint_is_transient() -> None:
    remote = PsrpRemote()
    try:
        ep = Endpoint(transport="psrp", address="127.0.0.1", port=1, ssl=False, auth="basic", connect_timeout_s=2)
        with pytest.raises(TransientError):
            remote.run(ep, PROBE, {})
    finally:
        remote.close()


@pytest.fixture
def tls_server(tmp_path: Path, demo: Templates, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    ca = make_ca(tmp_path)
    with serving(monkeypatch, tls=ca.server_context()) as server:
        server.world = open_world(demo.loaded)
        server.targets = {"vmm-hq.sim.test": Target("vmm", "hq", "hq")}
        yield server, ca


def test_https_with_the_test_ca_is_trusted_and_an_unknown_ca_is_refused(tls_server: Any, tmp_path: Path) -> None:
    server, ca = tls_server
    other = make_ca(tmp_path, "other")
    remote = PsrpRemote()
    try:
        trusted = endpoint(server, ssl=True, ca_file=str(ca.ca_file))
        assert remote.run(trusted, PROBE, {})["items"][0]["after"]["host_name"] == "HQ"
        with pytest.raises(PermanentError, match="not trusted"):
            remote.run(endpoint(server, ssl=True, ca_file=str(other.ca_file)), PROBE, {})
        with pytest.raises(PermanentError, match="not trusted"):
            remote.run(endpoint(server, ssl=True), PROBE, {})  # the system CAs do not know the test CA
    finally:
        remote.close()


# ------------------------------------------------------------------ winrm: the command line is constant


def test_winrm_sends_the_same_command_line_whatever_the_values(server: PsrpTestServer) -> None:
    remote = WinrmRemote()
    remote.run(endpoint(server), ECHO, {"Name": "a"})
    remote.run(endpoint(server), ECHO, {"Name": "'; Remove-Item C:\\ -Recurse #`$(x)\n", "Count": 2})
    assert server.winrs_command_lines == [("powershell.exe", " ".join(ARGUMENTS))] * 2
    assert [r.parameters for r in server.received] == [
        {"Name": "a"}, {"Name": "'; Remove-Item C:\\ -Recurse #`$(x)\n", "Count": 2}]


# ------------------------------------------------------------------ local: a fake powershell.exe

FAKE_POWERSHELL = r'''
import base64, json, sys
expected = json.loads(sys.argv[1])
if sys.argv[2:] != expected:
    print("unexpected command line", file=sys.stderr); sys.exit(64)
doc = json.loads(base64.b64decode(sys.stdin.buffer.read()).decode("utf-8"))
with open(sys.argv[0] + ".seen", "a", encoding="utf-8") as seen:
    seen.write(json.dumps(doc) + "\n")
p = doc["parameters"]
if p.get("Name") == "fail":
    result = {"output": None, "errors": [], "failed": {"id": "Boom,Script", "message": "it broke"}}
else:
    result = {"output": json.dumps({"schema": "test/Echo/1", "got": p}), "errors": {"id": "W", "message": "w"},
              "failed": None}
sys.stdout.write(base64.b64encode(json.dumps(result).encode()).decode())
'''


def test_local_runs_the_fixed_wrapper_with_the_values_on_stdin(tmp_path: Path) -> None:
    """Proves the framing (constant command line, the document on stdin, the result read back);
    not Windows PowerShell's execution of the wrapper, which only a Windows host can."""
    fake = tmp_path / "fake_powershell.py"
    fake.write_text(FAKE_POWERSHELL)
    remote = LocalRemote([sys.executable, str(fake), json.dumps(list(ARGUMENTS))])
    ep = Endpoint(transport="local")
    got = remote.run(ep, ECHO, {"Name": "x'; $(y)\n", "Count": 1})
    assert got["got"] == {"Name": "x'; $(y)\n", "Count": 1}
    assert got[ERROR_STREAM] == [{"id": "W", "message": "w"}]
    with pytest.raises(RemoteScriptError, match="it broke"):
        remote.run(ep, ECHO, {"Name": "fail"})
    seen = [json.loads(line) for line in (tmp_path / "fake_powershell.py.seen").read_text().splitlines()]
    assert {s["script"] for s in seen} == {ECHO.text}


# ------------------------------------------------------------------ live mode (opt-in)

LIVE = os.environ.get("FA_LIVE_VMM")


@pytest.mark.skipif(not LIVE, reason="live mode is off: set FA_LIVE_VMM=host, FA_LIVE_USER and FA_LIVE_PASSWORD "
                    "(FA_LIVE_AUTH, default negotiate; FA_LIVE_CA for a CA bundle) to probe a real host")
def test_live_probe() -> None:
    ep = Endpoint.model_validate({"transport": "psrp", "address": LIVE, "username": os.environ.get("FA_LIVE_USER"),
                                  "credential": "env:FA_LIVE_PASSWORD",
                                  "auth": os.environ.get("FA_LIVE_AUTH", "negotiate"),
                                  **({"ca_file": os.environ["FA_LIVE_CA"]} if os.environ.get("FA_LIVE_CA") else {})})
    remote = PsrpRemote()
    try:
        after = remote.run(ep, PROBE, {})["items"][0]["after"]
    finally:
        remote.close()
    assert after["host_name"] and after["powershell_version"].startswith("5.")




# ------------------------------------------------------------------ validate --deep: the endpoint probe


def test_the_deep_probe_reports_each_endpoint_with_its_config_key(server: PsrpTestServer, tmp_path: Path) -> None:
    loaded = load_config(copy_demo(tmp_path / "cfg", edit=over_psrp(port=server.port)))
    server.targets = dict(targets_for(loaded.config))
    vmm_hq = loaded.config.sites[0].vmm.address
    assert vmm_hq is not None
    server.targets[vmm_hq] = Target("dns", None, "not-a-vmm")  # answers, but has no VMM module
    remote = PsrpRemote()
    try:
        probes = {p.key: p for p in probe_endpoints(loaded.config, lambda transport: remote)}
    finally:
        remote.close()
    assert probes["sites[0].vmm"].outcome == "module missing"
    assert "VirtualMachineManager" in probes["sites[0].vmm"].detail
    others = [p for k, p in probes.items() if k != "sites[0].vmm"]
    assert others and all(p.outcome == "reachable" for p in others), others
    assert {"sites[1].vmm", "sites[0].hyperv_hosts[0].endpoint", "dns.servers[0].endpoint"} <= set(probes)


def test_the_deep_probe_reports_an_unreachable_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FA_SIM_PASSWORD", "s3cret")
    loaded = load_config(copy_demo(tmp_path / "cfg", edit=over_psrp(("vmm",), port=1)))
    remote = PsrpRemote()
    try:
        probes = probe_endpoints(loaded.config, lambda transport: remote)
    finally:
        remote.close()
    assert [(p.key, p.outcome) for p in probes] == [("sites[0].vmm", "unreachable"), ("sites[1].vmm", "unreachable")]


def test_close_closes_every_pool_and_an_idle_pool_is_reopened(server: PsrpTestServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    remote = PsrpRemote()
    remote.run(endpoint(server), PROBE, {})
    remote.run(endpoint(server, "hv-dr-01"), PROBE, {})
    remote.run(endpoint(server), PROBE, {})
    assert len(server.opened) == len(server.shells) == 2, "one pool per endpoint, reused"
    monkeypatch.setattr(psrp, "IDLE_S", 0.0)
    remote.run(endpoint(server), PROBE, {})
    assert len(server.opened) == 3 and len(server.shells) == 2, "the idle pool was closed and a new one opened"
    remote.close()
    assert server.shells == {}


def test_each_finished_pipeline_is_terminated_and_the_pool_kept(server: PsrpTestServer) -> None:
    """A WinRM client must terminate a finished command: a long-lived pool that did not kept
    every answer it had received (pypsrp's registry) and the server as many open commands."""
    remote = PsrpRemote()
    try:
        for _ in range(5):
            remote.run(endpoint(server), PROBE, {})
        assert len(server.opened) == 1, "terminating a pipeline must not cost the pool"
        [shell] = server.shells.values()
        assert shell.pool.pipeline_table == {}, "the server still holds finished commands"
        [worker] = remote._workers.values()
        assert worker.pool.pipelines == {}, "the client still holds finished pipelines and their output"
    finally:
        remote.close()


def test_a_winrm_quota_fault_is_transient_and_another_fault_is_permanent(server: PsrpTestServer) -> None:
    remote = PsrpRemote()
    try:
        server.fault_commands = [(2150859173, "This user is allowed a maximum number of 5 concurrent shells, "
                                  "which has been exceeded.")]
        with pytest.raises(TransientError, match="busy"):
            remote.run(endpoint(server), PROBE, {})
        server.fault_commands = [(5, "Access is denied.")]
        with pytest.raises(PermanentError, match="Access is denied") as caught:
            remote.run(endpoint(server), PROBE, {})
        assert not caught.value.transient
        assert remote.run(endpoint(server), PROBE, {})["items"][0]["key"] == "endpoint"
    finally:
        remote.close()


def test_winrm_over_https_trusts_the_test_ca_only(tls_server: Any, tmp_path: Path) -> None:
    server, ca = tls_server
    other = make_ca(tmp_path, "other")
    remote = WinrmRemote()
    ep = endpoint(server, transport="winrm", ssl=True, ca_file=str(ca.ca_file))
    assert remote.run(ep, PROBE, {})["items"][0]["after"]["host_name"] == "HQ"
    with pytest.raises(PermanentError, match="not trusted"):
        remote.run(endpoint(server, transport="winrm", ssl=True, ca_file=str(other.ca_file)), PROBE, {})


def test_ntlm_over_https(tmp_path: Path, demo: Templates, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = make_ca(tmp_path)
    with serving(monkeypatch, tls=ca.server_context(), auth="ntlm", users_file=tmp_path / "ntlm-users") as server:
        server.world = open_world(demo.loaded)
        server.targets = {"vmm-hq.sim.test": Target("vmm", "hq", "hq")}
        remote = PsrpRemote()
        try:
            ep = endpoint(server, ssl=True, auth="ntlm", ca_file=str(ca.ca_file))
            assert remote.run(ep, PROBE, {})["items"][0]["after"]["host_name"] == "HQ"
            assert remote.run(ep, PROBE, {})["items"][0]["key"] == "endpoint"  # the authenticated connection
            monkeypatch.setenv("FA_SIM_PASSWORD", "wrong")
            with pytest.raises(RemoteAuthError):  # another setting: a pool of its own, which authenticates anew
                remote.run(endpoint(server, ssl=True, auth="ntlm", ca_file=str(ca.ca_file), operation_timeout_s=59),
                           PROBE, {})
        finally:
            remote.close()


def test_a_credential_that_does_not_resolve_is_not_retried(server: PsrpTestServer, remote: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FA_SIM_PASSWORD")
    with pytest.raises(AgentError, match="FA_SIM_PASSWORD is not set") as caught:
        remote.run(endpoint(server), PROBE, {})
    assert not caught.value.transient
    assert server.received == []
