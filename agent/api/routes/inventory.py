"""Read-only views of the sites and plans: inventory, pools, subnets, reservations, plan states,
previews. Reading a site is a remote call to its VMM and hosts; the served agent keeps the last
read for ``INVENTORY_TTL_S`` so a status page polling every few seconds does not load VMM
(``?refresh=true`` reads again)."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from agent.api.auth import Caller, require
from agent.api.routes.operations import ServedDep
from agent.api.schemas import Plans, Preview
from agent.api.served import Served
from agent.domain.ipam import pool_usage
from agent.domain.model import Inventory
from agent.engine.planstate import kinds_allowed
from agent.engine.store import utcnow
from agent.errors import NotFoundError

router = APIRouter(prefix="/v1", tags=["inventory"])

INVENTORY_TTL_S = 15.0
Read = Annotated[Caller, Depends(require("read"))]
Refresh = Annotated[bool, Query(description="read the sites again instead of the last read")]


class InventoryCache:
    def __init__(self, served: Served) -> None:
        self.served = served
        self._lock = threading.Lock()
        self._at = 0.0
        self._inventory: Inventory | None = None
        self.read_at: datetime | None = None
        """When the last read began (UTC): what happened since is not in it."""

    def get(self, *, refresh: bool = False) -> Inventory:
        with self._lock:  # one read at a time: a burst of callers waits for it, not N reads
            if refresh or self._inventory is None or time.monotonic() - self._at > INVENTORY_TTL_S:
                began = utcnow()
                self._inventory = self.served.engine.inventory("planned")
                self._at, self.read_at = time.monotonic(), began
            return self._inventory

    @property
    def last(self) -> Inventory | None:
        """The last read, if any (metrics never read the sites themselves)."""
        return self._inventory


def inventory(s: Served, refresh: bool) -> Inventory:
    if s.inventory_cache is None:
        s.inventory_cache = InventoryCache(s)
    cache: InventoryCache = s.inventory_cache
    return cache.get(refresh=refresh)


def _dump(items: Any) -> list[dict[str, Any]]:
    return [i.model_dump(mode="json") for i in items]


@router.get("/sites", summary="The two sites and what the agent reaches at each")
def sites(s: ServedDep, _c: Read) -> dict[str, Any]:
    out = []
    for site in s.config.sites:
        out.append({"name": site.name, "local": site.name == s.config.agent.site,
                    "vmm": {"transport": site.vmm.transport, "address": site.vmm.address},
                    "hyperv_hosts": [h.name for h in site.hyperv_hosts], "routers": [r.name for r in site.routers],
                    "dns_servers": list(site.dns_servers)})
    return {"sites": out}


@router.get("/vms", summary="VMs with their NICs and IP configurations")
def vms(s: ServedDep, _c: Read, refresh: Refresh = False,
        site: Annotated[str | None, Query(max_length=128)] = None) -> dict[str, Any]:
    inv = inventory(s, refresh)
    return {"vms": _dump(v for v in inv.vms if site is None or v.site.lower() == site.lower()),
            "stale": list(inv.stale)}


@router.get("/vm-networks", summary="VM networks with their subnets")
def vm_networks(s: ServedDep, _c: Read, refresh: Refresh = False) -> dict[str, Any]:
    return {"vm_networks": _dump(inventory(s, refresh).vm_networks)}


@router.get("/pools", summary="Static IP pools with used and free address counts")
def pools(s: ServedDep, _c: Read, refresh: Refresh = False) -> dict[str, Any]:
    inv = inventory(s, refresh)
    return {"pools": [{**pool.model_dump(mode="json"), "used": used, "free": free}
                      for pool, used, free in pool_usage(inv.pools, inv.grants)]}


@router.get("/subnets", summary="Whole subnets the agent moves, with the site where each is active")
def subnets(s: ServedDep, _c: Read, refresh: Refresh = False) -> dict[str, Any]:
    inv = inventory(s, refresh)
    site_of_router = {r.name.lower(): site.name for site in s.config.sites for r in site.routers}
    out = []
    for subnet in s.config.subnets:
        at = sorted({site_of_router[r.router.lower()] for r in inv.routes
                     if r.prefix == subnet.prefix and r.router.lower() in site_of_router})
        out.append({"prefix": subnet.prefix, "stretched": subnet.stretched,
                    "active_site": at[0] if len(at) == 1 else None, "announced_at": at})
    return {"subnets": out}


@router.get("/reservations", summary="IP reservations the agent holds")
def reservations(s: ServedDep, _c: Read) -> dict[str, Any]:
    rows = s.engine.journal.reservations()
    return {"reservations": [{"site": r.site, "pool": r.pool, "address": r.address, "vm": r.vm, "nic": r.nic,
                              "purpose": r.purpose, "operation": r.operation_id,
                              "created_at": r.created_at.isoformat()} for r in rows]}


@router.get("/plans", response_model=Plans, summary="Recovery plans with their state and what can start now")
def plans(s: ServedDep, _c: Read, refresh: Refresh = False) -> dict[str, Any]:
    inv = inventory(s, refresh)
    full = s.config.agent.mode == "full"
    out = []
    for p in s.config.recovery_plans:
        st = s.engine.status(p.name, inv)
        out.append({**st.to_json(), "kinds_allowed": kinds_allowed(st, full_mode=full)})
    return {"mode": s.config.agent.mode, "plans": out}


@router.post("/plans/{name}/preview", summary="What an operation of that kind would change (nothing is recorded)")
def preview(name: str, body: Preview, s: ServedDep, _c: Read) -> dict[str, Any]:
    from agent.cli.preview import preview as previewed

    if s.config.plan(name) is None:
        raise NotFoundError(f"no recovery plan named {name!r} in the config", plan=name)
    # The CLI's own preview: the same JSON as 'plan --json', and its text for a CLI working from here.
    shown = previewed(s.engine, body.kind, name, strict=body.strict, recovery_point=body.recovery_point)
    return {**shown.body, "operation_kind": body.kind, "text": shown.text}
