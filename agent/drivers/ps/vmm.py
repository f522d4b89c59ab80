"""A site's System Center VMM server over PowerShell remoting (:class:`agent.ports.Vmm`).

Each port method is one ``powershell/vmm`` script run once at the VMM server with the whole
batch; the scripts read first and act only on drift, so every method is as idempotent as the
port says. Answers are flat projections (the scripts convert VMM's objects themselves: PSRP
serialises them one level deep), rebuilt here into the domain's models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from agent.config import Endpoint
from agent.domain.errors import InvalidRequest
from agent.domain.model import IpGrant, Nic, StaticIpPool, VirtualMachine, VmNetwork
from agent.drivers.ps import PsDriver, item_error
from agent.drivers.remoting import Remote, RemoteItem, RemoteScriptError
from agent.ports import GrantRequest, ItemResult, NicConnection, TestNetworkSpec, VmmInventory

__all__ = ["VMM_ERROR_IDS", "PsVmm"]

M = TypeVar("M", bound=BaseModel)

VMM_ERROR_IDS = {
    # Items the scripts could not classify before calling VMM: the cmdlet's FullyQualifiedErrorId.
    "IPAddressPoolExhausted": "pool_exhausted",
    "AgentNotFound": "not_found",
    "AgentConflict": "conflict",
}
"""Error-id prefixes of item errors that carry no ``code``, and the agent code each means."""


class PsVmm:
    """One site's VMM server, reached at ``endpoint`` through ``remote``.

    ``marker`` starts the description of every grant this agent makes (``<owner_id> ``, see
    :func:`agent.engine.actions.vmm._grant_description`); ``revoke_ips`` returns only addresses
    whose grant carries it (``conflict`` otherwise), so the agent never frees what it did not
    take. Empty: no such check (the ``sim`` driver's behaviour)."""

    def __init__(self, remote: Remote, endpoint: Endpoint, site: str, *, marker: str = "",
                 timeout_s: float | None = None) -> None:
        self._ps = PsDriver(remote, endpoint, timeout_s=timeout_s)
        self.site = site
        self.marker = marker

    # ------------------------------------------------------------------------------ read

    def read_inventory(self) -> VmmInventory:
        items = self._ps.call("vmm/Get-AgentInventory", Site=self.site)
        found: dict[str, list[Any]] = {"network": [], "pool": [], "grant": [], "vm": []}
        models: dict[str, type[BaseModel]] = {"network": VmNetwork, "pool": StaticIpPool, "grant": IpGrant,
                                              "vm": VirtualMachine}
        for item in items:
            kind = item.key.split(":", 1)[0]
            if kind not in found or item.after is None:
                raise RemoteScriptError(f"vmm/Get-AgentInventory at {self.site}: unexpected item {item.key!r}",
                                        script="vmm/Get-AgentInventory", key=item.key)
            if item.error_id is not None:
                raise item_error(item, VMM_ERROR_IDS)
            found[kind].append(self._model(models[kind], item.after, item.key))
        return VmmInventory(site=self.site, vm_networks=tuple(found["network"]), pools=tuple(found["pool"]),
                            grants=tuple(found["grant"]), vms=tuple(found["vm"]))

    def probe(self) -> str:
        items = self._ps.call("vmm/Test-AgentVmm", Site=self.site)
        if len(items) != 1 or not isinstance(items[0].after, dict):
            raise RemoteScriptError(f"vmm/Test-AgentVmm at {self.site} answered no message", script="vmm/Test-AgentVmm")
        return str(items[0].after.get("message", ""))

    # ---------------------------------------------------------------------------- grants

    def grant_ips(self, requests: Sequence[GrantRequest]) -> list[ItemResult[IpGrant]]:
        if not requests:
            return []
        batch = [{"pool": r.pool, "address": r.address, "owner_id": r.owner_id, "description": r.description}
                 for r in requests]
        items = self._ps.call("vmm/Grant-AgentIPAddress", RequestJson=json.dumps(batch))
        return [self._result(item, IpGrant) for item in self._in_order("vmm/Grant-AgentIPAddress", items, len(batch))]

    def revoke_ips(self, grants: Sequence[IpGrant]) -> list[ItemResult[None]]:
        results: list[ItemResult[None] | None] = []
        batch: list[dict[str, str]] = []
        for g in grants:
            if g.site != self.site:  # refused here: the script cannot know which site a grant is of
                results.append(ItemResult(f"{g.pool}:{g.address}", error=InvalidRequest(
                    f"grant {g.pool}:{g.address} belongs to site {g.site}; this is the VMM of {self.site}",
                    pool=g.pool, address=g.address)))
            else:
                results.append(None)
                batch.append({"pool": g.pool, "address": g.address, "owner_id": g.owner_id})
        if batch:
            items = iter(self._in_order("vmm/Revoke-AgentIPAddress",
                                        self._ps.call("vmm/Revoke-AgentIPAddress", RequestJson=json.dumps(batch),
                                                      Marker=self.marker), len(batch)))
            results = [r if r is not None else self._done(next(items)) for r in results]
        return [r for r in results if r is not None]

    # --------------------------------------------------------------------- test networks

    def create_test_networks(self, specs: Sequence[TestNetworkSpec]) -> list[ItemResult[VmNetwork]]:
        if not specs:
            return []
        batch = [{"name": s.name, "copy_of": s.copy_of, "description": s.description} for s in specs]
        items = self._ps.call("vmm/New-AgentTestNetwork", RequestJson=json.dumps(batch))
        return [self._result(i, VmNetwork, test_network=True)
                for i in self._in_order("vmm/New-AgentTestNetwork", items, len(batch))]

    def delete_test_networks(self, names: Sequence[str]) -> list[ItemResult[None]]:
        if not names:
            return []
        items = self._ps.call("vmm/Remove-AgentTestNetwork", Name=list(names))
        return [self._done(i) for i in self._in_order("vmm/Remove-AgentTestNetwork", items, len(names))]

    # ------------------------------------------------------------------------------ NICs

    def connect_nics(self, connections: Sequence[NicConnection]) -> list[ItemResult[Nic]]:
        if not connections:
            return []
        batch = [{"vm": c.vm, "nic": c.nic, "vm_network": c.vm_network, "vm_subnet": c.vm_subnet,
                  "addresses": [[a, p] for a, p in c.addresses]} for c in connections]
        items = self._ps.call("vmm/Set-AgentNicConnection", RequestJson=json.dumps(batch))
        return [self._result(i, Nic) for i in self._in_order("vmm/Set-AgentNicConnection", items, len(batch))]

    # --------------------------------------------------------------------------- helpers

    def _in_order(self, script: str, items: list[RemoteItem], wanted: int) -> list[RemoteItem]:
        # A batch answers one item per request, in order (a grant of "any address" is keyed by
        # the address VMM chose, so keys cannot pair them up).
        if len(items) != wanted:
            raise RemoteScriptError(f"{script} at {self.site} answered {len(items)} items for {wanted} requests: "
                                    "re-read before trusting what it did", script=script)
        return items

    def _model(self, model: type[M], value: Any, key: str, **extra: Any) -> M:
        if not isinstance(value, dict):
            raise RemoteScriptError(f"VMM of {self.site}: item {key!r} is not an object", key=key)
        fields = {k: v for k, v in value.items() if k in model.model_fields}
        if "site" in model.model_fields:
            fields["site"] = self.site
        fields.update({k: v for k, v in extra.items() if k not in value})
        return model.model_validate(fields)

    def _result(self, item: RemoteItem, model: type[M], **extra: Any) -> ItemResult[M]:
        if item.error_id is not None:
            return ItemResult(item.key, error=item_error(item, VMM_ERROR_IDS))
        if item.after is None:
            raise RemoteScriptError(f"VMM of {self.site}: item {item.key!r} succeeded without a value", key=item.key)
        return ItemResult(item.key, self._model(model, item.after, item.key, **extra), changed=item.changed)

    @staticmethod
    def _done(item: RemoteItem) -> ItemResult[None]:
        if item.error_id is not None:
            return ItemResult(item.key, error=item_error(item, VMM_ERROR_IDS))
        return ItemResult(item.key, changed=item.changed)
