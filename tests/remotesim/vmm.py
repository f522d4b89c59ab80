"""What a VMM server answers to each ``powershell/vmm`` script, computed from the simulated site.

Each handler runs the simulated VMM server (:class:`agent.drivers.sim.vmm.SimVmm`) -- the same
facts the ``sim`` driver gives -- and prints its result in the script's shape: flat projections
keyed like the script keys them, item errors carrying the id and code the script reports. A
fault of the whole call (the simulator's fault rules: timeout, unreachable) is raised as the
transport would raise it; any other whole-call refusal is the script's terminating error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from agent.domain.model import IpGrant
from agent.drivers.sim.vmm import SimVmm
from agent.errors import AgentError
from agent.ports import GrantRequest, ItemResult, NicConnection, TestNetworkSpec
from tests.remotesim import Call, ScriptFailed

# The id each script gives a condition it recognises before calling VMM (see the scripts).
SCRIPT_IDS = {
    "not_found": "AgentNotFound",
    "address_outside_pool": "AgentAddressOutsidePool",
    "address_reserved": "AgentAddressReserved",
    "address_already_granted": "AgentAddressAlreadyGranted",
    "conflict": "AgentConflict",
    "not_a_test_network": "AgentNotATestNetwork",
    "network_in_use": "AgentNetworkInUse",
    "invalid_setting": "AgentInvalidSetting",
    "invalid_request": "AgentInvalidRequest",
}
# Conditions only VMM itself finds: the script's catch reports the cmdlet's error record, with
# no code; the driver maps the id.
VMM_IDS = {
    "pool_exhausted":
        "IPAddressPoolExhausted,Microsoft.SystemCenter.VirtualMachineManager.Cmdlets.GrantSCIPAddressCmdlet",
}


def _vmm(call: Call) -> SimVmm:
    site = call.target.site
    if call.target.role != "vmm" or site is None:
        raise ScriptFailed("CommandNotFoundException", f"{call.target.name} is no VMM server")
    return SimVmm(call.world, site)


def _run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except AgentError as exc:
        if exc.transient:
            raise
        raise ScriptFailed(f"{type(exc).__name__},{exc.code}", exc.message) from None


def _error(exc: AgentError) -> dict[str, Any]:
    if exc.code in VMM_IDS:
        return {"id": VMM_IDS[exc.code], "message": exc.message, "code": None}
    return {"id": SCRIPT_IDS.get(exc.code, "AgentRefused"), "message": exc.message, "code": exc.code}


def _dump(value: Any) -> Any:
    if value is None:
        return None
    found: dict[str, Any] = value.model_dump(mode="json")
    found.pop("site", None)
    return found


def _items(results: Sequence[ItemResult[Any]]) -> list[dict[str, Any]]:
    return [{"key": r.key, "changed": r.changed, "before": None, "after": _dump(r.value),
             "error": None if r.error is None else _error(r.error)} for r in results]


def _doc(call: Call, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"schema": call.script.schema_id, "items": items, **extra}


def _requests(call: Call) -> list[dict[str, Any]]:
    loaded = json.loads(call.parameters["RequestJson"])
    return [loaded] if isinstance(loaded, dict) else list(loaded)  # ConvertFrom-Json unrolls one


def inventory(call: Call) -> dict[str, Any]:
    vmm = _vmm(call)
    inv = _run(vmm.read_inventory)

    def item(key: str, value: Any) -> dict[str, Any]:
        return {"key": key, "changed": False, "before": None, "after": _dump(value), "error": None}

    items = ([item(f"network:{n.name}", n) for n in inv.vm_networks]
             + [item(f"pool:{p.name}", p) for p in inv.pools]
             + [item(f"grant:{g.pool}:{g.address}", g) for g in inv.grants]
             + [item(f"vm:{v.name}", v) for v in inv.vms])
    return _doc(call, items, site=call.parameters["Site"])


def probe(call: Call) -> dict[str, Any]:
    message = _run(_vmm(call).probe)
    return _doc(call, [{"key": call.parameters["Site"], "changed": False, "before": None,
                        "after": {"message": message}, "error": None}])


def grant(call: Call) -> dict[str, Any]:
    reqs = [GrantRequest(pool=r["pool"], address=r["address"], owner_id=r["owner_id"], description=r["description"])
            for r in _requests(call)]
    return _doc(call, _items(_run(lambda: _vmm(call).grant_ips(reqs))))


def revoke(call: Call) -> dict[str, Any]:
    vmm = _vmm(call)
    marker = call.parameters["Marker"]
    wanted = _requests(call)
    held = {(g.pool, g.address): g for g in _run(vmm.read_inventory).grants} if marker else {}
    items: list[dict[str, Any]] = []
    todo: list[IpGrant] = []
    for r in wanted:
        g = held.get((r["pool"], r["address"]))
        if marker and g is not None and g.owner_id == r["owner_id"] and not g.description.startswith(marker):
            items.append({"key": f"{r['pool']}:{r['address']}", "changed": False, "before": _dump(g), "after": _dump(g),
                          "error": {"id": "AgentGrantNotMarked", "code": "conflict",
                                    "message": f"{r['address']} in pool {r['pool']} was not granted by this agent "
                                               f"(description '{g.description}'); left alone"}})
            continue
        todo.append(IpGrant(pool=r["pool"], site=vmm.site, address=r["address"], owner_id=r["owner_id"]))
        items.append({})
    done = iter(_items(_run(lambda: vmm.revoke_ips(todo))) if todo else [])
    return _doc(call, [i or next(done) for i in items])


def create_networks(call: Call) -> dict[str, Any]:
    specs = [TestNetworkSpec(name=r["name"], copy_of=r["copy_of"], description=r["description"])
             for r in _requests(call)]
    return _doc(call, _items(_run(lambda: _vmm(call).create_test_networks(specs))))


def delete_networks(call: Call) -> dict[str, Any]:
    names = list(call.parameters["Name"])
    return _doc(call, _items(_run(lambda: _vmm(call).delete_test_networks(names))))


def connect(call: Call) -> dict[str, Any]:
    conns = [NicConnection(vm=r["vm"], nic=r["nic"], vm_network=r["vm_network"], vm_subnet=r["vm_subnet"],
                           addresses=tuple((a, int(p)) for a, p in r["addresses"])) for r in _requests(call)]
    return _doc(call, _items(_run(lambda: _vmm(call).connect_nics(conns))))


HANDLERS = {
    "Get-AgentInventory": inventory,
    "Test-AgentVmm": probe,
    "Grant-AgentIPAddress": grant,
    "Revoke-AgentIPAddress": revoke,
    "New-AgentTestNetwork": create_networks,
    "Remove-AgentTestNetwork": delete_networks,
    "Set-AgentNicConnection": connect,
}
