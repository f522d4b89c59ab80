"""Recorded VMM answers (``tests/recordings/vmm/``) replayed through the transport seam and the
driver: partial failures carry on per item with the right agent code, a lost answer is retried
(transient), a terminating error or another script version stops the call (permanent)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from agent.config import Endpoint, RetryPolicy
from agent.drivers.ps.vmm import PsVmm
from agent.drivers.remoting import PsScript, RemoteScriptError, check_parameters, script_dir
from agent.engine.retrying import call_with_retries
from agent.errors import AgentError, TimeoutError_
from agent.ports import GrantRequest, NicConnection

RECORDINGS = Path(__file__).parents[1] / "recordings" / "vmm"
ENDPOINT = Endpoint(transport="psrp", address="vmm01.contoso.test", ssl=True, auth="kerberos", username="agent")
POLICY = RetryPolicy(attempts=3, initial_backoff_s=0)


class Replay:
    """A transport that answers each call with the next recorded answer."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def run(self, endpoint: Endpoint, script: PsScript, parameters: Mapping[str, Any], *,
            timeout_s: float | None = None) -> Any:
        check_parameters(script, parameters)
        self.calls.append((script.name, dict(parameters)))
        answer = self.answers.pop(0)
        if "transient" in answer:
            raise TimeoutError_(answer["message"], endpoint=endpoint.address)
        if "script_error" in answer:
            raise RemoteScriptError(answer["message"], script=script.name,
                                    fully_qualified_error_id=answer["script_error"])
        return json.loads(json.dumps(answer))

    def close(self) -> None:
        pass


def recording(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((RECORDINGS / name).read_text())
    return loaded


def run(rec: dict[str, Any]) -> tuple[Any, Replay]:
    remote = Replay(rec["answers"])
    vmm = PsVmm(remote, ENDPOINT, "site-b", marker="failover-agent ")
    if rec["script"] == "vmm/Grant-AgentIPAddress":
        reqs = [GrantRequest(pool, address, owner, "failover-agent op=op-1")
                for pool, address, owner in rec["requests"]]
        return call_with_retries("grant", lambda: vmm.grant_ips(reqs), POLICY, lambda _s: None), remote
    if rec["script"] == "vmm/Set-AgentNicConnection":
        conns = [NicConnection(vm, nic, net, sub, tuple((a, p) for a, p in addrs))
                 for vm, nic, net, sub, addrs in rec["connections"]]
        return vmm.connect_nics(conns), remote
    if rec["script"] == "vmm/Remove-AgentTestNetwork":
        return vmm.delete_test_networks(rec["names"]), remote
    return vmm.read_inventory(), remote


ITEMIZED = sorted(p.name for p in RECORDINGS.glob("*.json") if "expect" in recording(p.name))


def test_every_recorded_answer_has_its_script_shape() -> None:
    checked = 0
    for path in sorted(RECORDINGS.glob("*.json")):
        rec = recording(path.name)
        schema = json.loads((script_dir() / f"{rec['script']}.schema.json").read_text())
        for answer in rec["answers"]:
            if "schema" in answer and answer["schema"].endswith("/1"):
                jsonschema.validate(answer, schema)
                checked += 1
    assert checked >= 7


@pytest.mark.parametrize("name", ITEMIZED)
def test_each_item_gets_its_own_outcome_and_the_batch_goes_on(name: str) -> None:
    rec = recording(name)
    results, remote = run(rec)
    got = [[r.key, r.changed, None if r.error is None else r.error.code] for r in results]
    assert got == rec["expect"]
    assert len(remote.calls) == len(rec["answers"]), "one call, plus one retry per lost answer"
    for r in results:
        if r.error is not None:
            assert r.error.fields.get("fully_qualified_error_id"), "the script's error id is kept for the operator"


@pytest.mark.parametrize("name", ["grant-terminating.json", "grant-old-script.json"])
def test_a_terminating_error_or_another_script_version_stops_without_retrying(name: str) -> None:
    rec = recording(name)
    with pytest.raises(AgentError) as caught:
        run(rec)
    assert caught.value.code == rec["expect_error"] and not caught.value.transient


def test_a_terminating_error_is_not_retried() -> None:
    rec = recording("grant-terminating.json")
    remote = Replay(rec["answers"])
    vmm = PsVmm(remote, ENDPOINT, "site-b")
    with pytest.raises(RemoteScriptError):
        call_with_retries("grant", lambda: vmm.grant_ips([GrantRequest("pool-b-web", "192.168.1.11", "x")]),
                          POLICY, lambda _s: None)
    assert len(remote.calls) == 1


def test_the_recorded_inventory_becomes_the_domain_model() -> None:
    inv, remote = run(recording("inventory.json"))
    assert remote.calls == [("vmm/Get-AgentInventory", {"Site": "site-b"})]
    assert [n.name for n in inv.vm_networks] == ["prod-b", "test-prod-b"]
    assert [n.test_network for n in inv.vm_networks] == [False, True]
    assert inv.vm_networks[0].subnet("web") is not None and inv.vm_networks[0].subnet("web").vlan_id == 101
    assert {p.name: p.reserved for p in inv.pools} == {"pool-b-web": ("192.168.1.100",), "pool-b-web6": ()}
    [grant] = inv.grants
    assert grant.site == "site-b" and grant.description.startswith("failover-agent op=")
    [vm] = inv.vms
    assert vm.nic("nic0") is not None and vm.nic("nic0").is_static
    assert vm.nic("nic1") is not None and not vm.nic("nic1").is_static
