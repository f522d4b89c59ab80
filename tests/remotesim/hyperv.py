"""What a Hyper-V host answers to each ``powershell/hyperv/`` script, computed from the
simulated sites: the simulated driver does the work (its rules are the hosts' rules) and each
handler reports it in the script's shape -- only what Hyper-V itself knows (no sites, no VMM
networks), item errors with the ``Agent.<code>`` ids the scripts raise for the conditions they
recognise."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agent.domain.model import NicFailoverConfig, Replication, VirtualMachine
from agent.drivers.sim.hyperv import SimHyperV
from agent.errors import AgentError, NotFoundError
from agent.ports import ItemResult
from tests.remotesim import Call, Handler, ScriptFailed


def _hv(call: Call) -> tuple[SimHyperV, str]:
    site = call.target.site
    if site is None:
        raise ScriptFailed("CommandNotFoundException", "Hyper-V\\Get-VM: the Hyper-V module is not on this server")
    return call.world.hyperv(site), call.parameters["ComputerName"]


def _document(call: Call, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schema": call.script.schema_id, "items": items}


def _error(exc: AgentError) -> dict[str, Any]:
    return {"id": f"Agent.{exc.code}", "message": exc.message, "code": exc.code}


def _item(key: str, *, changed: bool = False, before: Any = None, after: Any = None,
          error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"key": key, "changed": changed, "before": before, "after": after, "error": error}


def _whole(run: Callable[[], Any]) -> Any:
    """A host the site does not have: Hyper-V's cmdlets fail the whole script."""
    try:
        return run()
    except NotFoundError as exc:
        raise ScriptFailed("VirtualizationException,Microsoft.HyperV.PowerShell.Commands.GetVM",
                           f"The operation on computer '{exc.fields.get('host', '?')}' failed: {exc.message}") from None


def _config(c: NicFailoverConfig) -> dict[str, Any]:
    return c.model_dump(mode="json")


def _replication(host: str, r: Replication) -> dict[str, Any]:
    mode = "Primary" if host == r.primary_host else "Replica"
    return {"vm": r.vm, "primary_host": r.primary_host, "replica_host": r.replica_host, "state": r.state.value,
            "mode": mode, "test_vm": r.test_vm}


def _listed(host: str, r: Replication) -> dict[str, Any]:
    """Get-AgentReplication's form: the replica host lists the recovery points, oldest first."""
    points = sorted(r.recovery_points, key=lambda p: p.created) if host == r.replica_host else []
    return {**_replication(host, r), "recovery_points": [
        {"name": p.name, "created": p.created.isoformat(), "app_consistent": p.app_consistent} for p in points]}


def _acted(host: str, r: Replication, point: str | None) -> dict[str, Any]:
    """Invoke-AgentReplicaAction's form: the point it used, as the script knows it (it asked)."""
    return {**_replication(host, r), "recovery_point": point}


def _vm(v: VirtualMachine) -> dict[str, Any]:
    return {"name": v.name, "host": v.host, "role": v.role, "power_state": v.power_state.value}


def _results(results: list[ItemResult[Any]], before: Callable[[str], Any],
             value: Callable[[Any], Any]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        if r.error is not None:
            out.append(_item(r.key, error=_error(r.error)))
        else:
            after = None if r.value is None else value(r.value)
            out.append(_item(r.key, changed=r.changed, before=before(r.key) if r.changed else after, after=after))
    return out


def _nics(call: Call) -> list[tuple[str, str]]:
    return [(n["vm"], n["nic"]) for n in json.loads(call.parameters["NicsJson"])]


def get_failover_config(call: Call) -> dict[str, Any]:
    hv, host = _hv(call)
    configs = _whole(lambda: hv.get_failover_configs(host, _nics(call)))
    return _document(call, [_item(f"{c.vm}/{c.nic}", after=_config(c)) for c in configs])


def _configs_before(hv: SimHyperV, host: str, keys: list[tuple[str, str]]) -> dict[str, Any]:
    return {f"{c.vm}/{c.nic}": _config(c) for c in hv.get_failover_configs(host, keys)}


def set_failover_config(call: Call) -> dict[str, Any]:
    hv, host = _hv(call)
    configs = [NicFailoverConfig.model_validate(c) for c in json.loads(call.parameters["ConfigsJson"])]
    before = _whole(lambda: _configs_before(hv, host, [(c.vm, c.nic) for c in configs]))
    results = _whole(lambda: hv.set_failover_configs(host, configs))
    return _document(call, _results(results, lambda k: before.get(k), _config))


def clear_failover_config(call: Call) -> dict[str, Any]:
    hv, host = _hv(call)
    nics = _nics(call)
    before = _whole(lambda: _configs_before(hv, host, nics))
    results = _whole(lambda: hv.clear_failover_configs(host, nics))
    return _document(call, [_item(r.key, error=_error(r.error)) if r.error is not None
                            else _item(r.key, changed=r.changed, before=before.get(r.key) if r.changed else None)
                            for r in results])


def get_replication(call: Call) -> dict[str, Any]:
    hv, host = _hv(call)
    reps = _whole(lambda: hv.get_replications(host, call.parameters["VmName"]))
    return _document(call, [_item(r.vm, after=_listed(host, r)) for r in reps])


def invoke_replica_action(call: Call) -> dict[str, Any]:
    hv, host = _hv(call)
    vms = call.parameters["VmName"]
    action = call.parameters["Action"]
    points = json.loads(call.parameters.get("PointsJson", "{}")) if action in ("failover", "start_test") else {}
    before = {r.vm: _acted(host, r, None) for r in _whole(lambda: hv.get_replications(host, vms))}
    results = _whole(lambda: hv.replicate(host, action, vms, points or None))
    return _document(call, _results(results, lambda k: before.get(k),
                                    lambda r: _acted(host, r, points.get(r.vm) if action in ("failover", "start_test")
                                                     and r.vm in points else None)))


def set_vm_power(call: Call) -> dict[str, Any]:
    hv, host = _hv(call)
    action = call.parameters["Action"]
    results = _whole(lambda: hv.set_power(host, action, call.parameters["VmName"]))
    was = "Running" if action == "stop" else "Off"
    items = _results(results, lambda k: None, _vm)
    return _document(call, [{**i, "before": {**i["after"], "power_state": was}} if i["changed"] else i
                            for i in items])


def get_host_probe(call: Call) -> dict[str, Any]:
    hv, host = _hv(call)
    try:
        answer = hv.probe(host)
    except NotFoundError as exc:
        return _document(call, [_item(host, error={
            "id": "VirtualizationException,Microsoft.HyperV.PowerShell.Commands.GetVMHost",
            "message": f"Hyper-V was unable to find a virtual machine management service on computer '{host}'. "
                       f"({exc.message})", "code": None})])
    held = int(answer.rsplit("(", 1)[1].split()[0]) if "(" in answer else 0
    return _document(call, [_item(host, after={"host": host, "vms": held,
                                               "answer": f"Hyper-V host {host} answers ({held} VMs)"})])


HANDLERS: dict[str, Handler] = {
    "Get-AgentFailoverConfig": get_failover_config,
    "Set-AgentFailoverConfig": set_failover_config,
    "Clear-AgentFailoverConfig": clear_failover_config,
    "Get-AgentReplication": get_replication,
    "Invoke-AgentReplicaAction": invoke_replica_action,
    "Set-AgentVMPower": set_vm_power,
    "Get-AgentHostProbe": get_host_probe,
}
