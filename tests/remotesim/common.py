"""``powershell/common/``: the endpoint probe, answered as each simulated role would."""

from __future__ import annotations

from typing import Any

from tests.remotesim import Call

MODULES = ("VirtualMachineManager", "Hyper-V", "DnsServer", "NetTCPIP", "RemoteAccess")
HAS = {"vmm": {"VirtualMachineManager", "NetTCPIP"}, "hyperv": {"Hyper-V", "NetTCPIP"},
       "dns": {"DnsServer", "NetTCPIP"}, "router": {"NetTCPIP", "RemoteAccess"}}


def test_agent_endpoint(call: Call) -> dict[str, Any]:
    names = call.parameters.get("ModuleName") or list(MODULES)
    if isinstance(names, str):
        names = [names]
    has = HAS[call.target.role]
    modules = [{"name": n, "available": n in has, "version": "1.0" if n in has else None} for n in names]
    after = {"host_name": call.target.name.upper(), "powershell_version": "5.1.17763.1", "modules": modules}
    return {"schema": "common/Test-AgentEndpoint/1",
            "items": [{"key": "endpoint", "changed": False, "before": None, "after": after, "error": None}]}


HANDLERS = {"Test-AgentEndpoint": test_agent_endpoint}
