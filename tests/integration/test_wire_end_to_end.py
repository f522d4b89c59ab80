"""The demo, end to end on the wire: engine -> PowerShell drivers -> psrp transport -> pypsrp
-> HTTP -> the PSRP test server -> the handlers -> the simulated sites. Every VMM server,
Hyper-V host, DNS server and router of the demo is a ``<name>.sim.test`` endpoint of one test
server; the simulated world the server answers from is the only state there is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.drivers.remoting import load_script
from agent.drivers.sim import SimWorld
from agent.engine.model import OperationKind, OpStatus
from tests.psrpserver import PsrpTestServer, serving
from tests.psrpserver.server import shipped_scripts
from tests.remotesim import ALL_ROLES, over_psrp, targets_for
from tests.rigs import Rig, Templates, copy_demo, run_cli


@dataclass
class WireRig:
    rig: Rig
    world: SimWorld
    server: PsrpTestServer


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[WireRig]:
    with serving(monkeypatch) as server:
        templates = Templates.build(copy_demo(tmp_path / "demo", edit=over_psrp(ALL_ROLES, port=server.port)))
        state, store = templates.copy_to(tmp_path / "rig")
        inventory = templates.loaded.simulator_inventory
        assert inventory is not None, "the demo keeps its simulator section: the handlers answer from it"
        world = SimWorld.open(inventory, state)
        server.world, server.targets = world, targets_for(templates.loaded.config)
        rig = Rig(templates.loaded, state, store)
        try:
            yield WireRig(rig, world, server)
        finally:
            rig.close()


def went_over_the_wire(wire: WireRig) -> None:
    """Every role was reached on the wire, only with shipped scripts, each sent unchanged."""
    assert wire.server.received, "nothing reached the server"
    roles = {wire.server.targets[r.host].role for r in wire.server.received}
    assert roles == set(ALL_ROLES), f"roles reached: {sorted(roles)}"
    shipped = {load_script(name).text for name in shipped_scripts()}
    assert {r.script_text for r in wire.server.received} <= shipped


def test_a_drill_and_its_cleanup_over_the_wire_leave_the_sites_as_they_were(wire: WireRig) -> None:
    before = wire.world.snapshot()
    test = wire.rig.start(OperationKind.TEST_FAILOVER)
    during = wire.world.snapshot()
    cleanup = wire.rig.start(OperationKind.CLEANUP_TEST, parent_id=test.id)

    assert (test.status, cleanup.status) == (OpStatus.SUCCEEDED.value, OpStatus.SUCCEEDED.value), (
        test.errors, cleanup.errors)
    assert during["vm_networks"] != before["vm_networks"]
    assert {vm for vm in during["vms"]["contoso-west"] if vm.endswith(" - Test")} == {
        "sql01 - Test", "app01 - Test", "app02 - Test", "web01 - Test"}
    assert during["record_sets"]["dns-drill"] != before["record_sets"]["dns-drill"]
    for part in ("failover_configs", "routes"):
        assert during[part] == before[part], part
    assert wire.world.snapshot() == before
    went_over_the_wire(wire)


def test_planned_failover_commit_and_failback_over_the_wire(wire: WireRig) -> None:
    before = wire.world.snapshot()
    seen = {}
    for kind in (OperationKind.PLANNED_FAILOVER, OperationKind.COMMIT, OperationKind.REVERSE,
                 OperationKind.FAILBACK):
        view = wire.rig.start(kind)
        assert view.status == OpStatus.SUCCEEDED.value, (kind, view.errors)
        seen[kind] = wire.world.snapshot()

    moved = seen[OperationKind.COMMIT]
    assert moved["record_sets"]["dns-contoso"] != before["record_sets"]["dns-contoso"]
    assert moved["routes"] != before["routes"]
    after = seen[OperationKind.FAILBACK]
    assert after["record_sets"] == before["record_sets"]
    assert after["routes"] == before["routes"]
    assert {vm: r["primary_site"] for vm, r in after["replications"].items()} == dict.fromkeys(
        ("sql01", "app01", "app02", "web01"), "contoso-west")
    went_over_the_wire(wire)


@pytest.mark.usefixtures("cli_env")
def test_validate_deep_probes_every_endpoint_over_the_wire(wire: WireRig) -> None:
    result = run_cli("validate", "--deep", "--config", str(wire.rig.loaded.path))
    assert result.exit_code == 0, result.output
    for i, site in enumerate(wire.rig.loaded.config.sites):
        assert f"sites[{i}].vmm ({site.vmm.address}): reachable" in result.output
    probe = load_script("common/Test-AgentEndpoint").text
    assert {wire.server.targets[r.host].role for r in wire.server.received if r.script_text == probe} == set(
        ALL_ROLES)


@pytest.fixture
def vmm_wire(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[WireRig]:
    """Only the VMM servers on the wire (the rest simulated in process): what runs while the
    other PowerShell drivers are still missing."""
    with serving(monkeypatch) as server:
        templates = Templates.build(copy_demo(tmp_path / "demo", edit=over_psrp(("vmm",), port=server.port)))
        state, store = templates.copy_to(tmp_path / "rig")
        rig = Rig(templates.loaded, state, store)
        server.world, server.targets = rig.world, targets_for(templates.loaded.config)
        try:
            yield WireRig(rig, rig.world, server)
        finally:
            rig.close()


def test_a_drill_and_its_cleanup_with_vmm_over_the_wire(vmm_wire: WireRig) -> None:
    before = vmm_wire.world.snapshot()
    test = vmm_wire.rig.start(OperationKind.TEST_FAILOVER)
    cleanup = vmm_wire.rig.start(OperationKind.CLEANUP_TEST, parent_id=test.id)
    assert (test.status, cleanup.status) == (OpStatus.SUCCEEDED.value, OpStatus.SUCCEEDED.value), (
        test.errors, cleanup.errors)
    assert vmm_wire.world.snapshot() == before
    assert {vmm_wire.server.targets[r.host].role for r in vmm_wire.server.received} == {"vmm"}
    assert any(r.script_text == load_script("vmm/Grant-AgentIPAddress").text for r in vmm_wire.server.received)


@pytest.mark.usefixtures("cli_env")
def test_validate_deep_says_unreachable_endpoints_apart_from_wrong_ones(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A VMM server that does not answer is exit 3 (try again later), in text and in --json,
    where each PowerShell endpoint is one of the probes."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once the socket closes
    with serving(monkeypatch):
        config = copy_demo(tmp_path / "demo", edit=over_psrp(("vmm",), port=port))
        text = run_cli("validate", "--deep", "--config", str(config))
        assert text.exit_code == 3, text.output
        assert "sites[0].vmm" in text.output and "unreachable" in text.output
        doc = json.loads(run_cli("validate", "--deep", "--json", "--config", str(config)).stdout)
    assert doc["ok"] is False
    vmm = [p for p in doc["probes"] if p["kind"] == "powershell" and p["key"].endswith(".vmm")]
    assert len(vmm) == 2 and {p["code"] for p in vmm} == {"unreachable"}
    assert {p["key"] for p in doc["problems"]} >= {"sites[0].vmm", "sites[1].vmm"}
