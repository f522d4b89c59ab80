"""``validate --deep``, PowerShell side: each configured ``psrp`` / ``winrm`` / ``local``
endpoint is opened and asked, read-only, who it is and which of the modules its role needs it
has (``powershell/common/Test-AgentEndpoint.ps1``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from agent.config import AgentConfig, Endpoint
from agent.drivers.ps import PsDriver
from agent.drivers.remoting import Remote
from agent.errors import AgentError

MODULES = ("VirtualMachineManager", "Hyper-V", "DnsServer", "NetTCPIP", "RemoteAccess")

ROUTER_MODULES: dict[str, str | None] = {"sim": "NetTCPIP", "netroute": "NetTCPIP", "bgp": "RemoteAccess",
                                         "script": None}
"""The module a router's endpoint needs, by kind: a ``script`` router's endpoint is the host that
runs the operator's script, which needs PowerShell only (what it reaches the router with, SSH or
an API, is the script's business)."""

Outcome = Literal["reachable", "unreachable", "module missing", "failed"]


@dataclass(frozen=True)
class EndpointProbe:
    key: str
    """Where the endpoint is in the config (``sites[0].vmm``)."""
    address: str
    outcome: Outcome
    detail: str

    @property
    def ok(self) -> bool:
        return self.outcome == "reachable"


def powershell_endpoints(config: AgentConfig) -> Iterator[tuple[str, Endpoint, str | None]]:
    """Each PowerShell-reached endpoint: its config key, the endpoint, the module its role needs."""
    for i, site in enumerate(config.sites):
        yield f"sites[{i}].vmm", site.vmm, "VirtualMachineManager"
        for j, host in enumerate(site.hyperv_hosts):
            yield f"sites[{i}].hyperv_hosts[{j}].endpoint", host.endpoint, "Hyper-V"
        for j, router in enumerate(site.routers):
            yield f"sites[{i}].routers[{j}].endpoint", router.endpoint, ROUTER_MODULES[router.kind]
    for i, third in enumerate(config.third_sites):
        for j, router in enumerate(third.routers):
            yield f"third_sites[{i}].routers[{j}].endpoint", router.endpoint, ROUTER_MODULES[router.kind]
    for i, server in enumerate(config.dns.servers):
        if server.endpoint is not None:
            yield f"dns.servers[{i}].endpoint", server.endpoint, "DnsServer"


def probe_endpoints(config: AgentConfig, remote: Callable[[str], Remote]) -> list[EndpointProbe]:
    """Probe each PowerShell endpoint of ``config`` (sim endpoints are skipped)."""
    found: list[EndpointProbe] = []
    for key, endpoint, needs in powershell_endpoints(config):
        if endpoint.transport == "sim":
            continue
        address = endpoint.address or "localhost"
        try:
            driver = PsDriver(remote(endpoint.transport), endpoint, timeout_s=endpoint.operation_timeout_s)
            after: dict[str, Any] = driver.call("common/Test-AgentEndpoint", ModuleName=list(MODULES))[0].after or {}
        except AgentError as exc:
            outcome: Outcome = "unreachable" if exc.transient else "failed"
            found.append(EndpointProbe(key, address, outcome, exc.message))
            continue
        modules = {m.get("name"): m for m in after.get("modules") or []}
        who = f"{after.get('host_name')}, PowerShell {after.get('powershell_version')}"
        if needs is None:
            found.append(EndpointProbe(key, address, "reachable", who))
        elif not (modules.get(needs) or {}).get("available"):
            found.append(EndpointProbe(key, address, "module missing", f"{who}: module {needs} is not installed"))
        else:
            found.append(EndpointProbe(key, address, "reachable", f"{who}, {needs} {modules[needs].get('version')}"))
    return found
