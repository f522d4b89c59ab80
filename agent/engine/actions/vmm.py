"""Step actions on a site's VMM: reserve addresses, connect NICs, create and delete test
networks, return a test failover's reservations.

Every grant VMM makes is journalled (the reservations the agent owns) and audited; a grant is
identified in VMM by a description carrying the agent's owner id, the operation, the VM, NIC,
IP configuration and purpose, so a grant made just before a crash is still found afterwards.
"""

from __future__ import annotations

from agent.domain.model import IpGrant
from agent.engine.actions.base import ActionContext, action, error_json, outcomes
from agent.engine.model import ItemOutcome, StepResult
from agent.engine.steps import (
    ConnectArgs,
    CreateTestNetworksArgs,
    DeleteTestNetworksArgs,
    ReserveArgs,
    ReserveItem,
    RevokeTestGrantsArgs,
)
from agent.ports import GrantRequest, ItemResult, NicConnection, TestNetworkSpec

_TAKEN_MEANWHILE = ("address_already_granted", "address_reserved")


def _grant_description(ctx: ActionContext, it: ReserveItem) -> str:
    return f"{ctx.owner} op={ctx.op_id} vm={it.vm} nic={it.nic} ip={it.ip_index} purpose={it.purpose}"


def _nic_ids(ctx: ActionContext, site: str, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    inv = ctx.call(f"vmm.read_inventory@{site}", ctx.ports.vmm[site].read_inventory)
    return {(vm.name, nic.name): nic.id for vm in inv.vms for nic in vm.nics if (vm.name, nic.name) in wanted}


@action("vmm.reserve", ReserveArgs)
def reserve(ctx: ActionContext, args: ReserveArgs) -> StepResult:
    """Grant each planned address to its NIC. An address the plan chose freely (not a retained
    source address) that someone else took since planning is replaced by any free address of
    the same pool, chosen by VMM itself; the deviation is recorded."""

    site = args.site
    vmm = ctx.ports.vmm[site]
    items, skipped = ctx.live(args.items)
    # Test VM NICs only exist once the test failover has started: resolve their ids now.
    unresolved = {(it.owner_vm, it.nic) for it in items if not it.nic_id}
    ids = _nic_ids(ctx, site, unresolved) if unresolved else {}
    done: list[ItemOutcome] = list(skipped)
    requests: list[GrantRequest] = []
    ready: list[ReserveItem] = []
    for it in items:
        nic_id = it.nic_id or ids.get((it.owner_vm, it.nic))
        if not nic_id:
            done.append(ItemOutcome(key=it.key, vm=it.vm, error={
                "code": "not_found", "category": "permanent",
                "message": f"NIC {it.nic} of {it.owner_vm} not found at {site}", "vm": it.owner_vm}))
            continue
        ready.append(it)
        requests.append(GrantRequest(pool=it.pool, address=it.address, owner_id=nic_id,
                                     description=_grant_description(ctx, it)))
    results = ctx.call(f"vmm.grant_ips@{site}", lambda: vmm.grant_ips(requests)) if requests else []
    retry_items: list[ReserveItem] = []
    retry_requests: list[GrantRequest] = []
    granted: list[tuple[ReserveItem, ItemResult[IpGrant]]] = []
    for it, req, res in zip(ready, requests, results, strict=True):
        if res.error and res.error.code in _TAKEN_MEANWHILE and it.flexible:
            retry_items.append(it)
            retry_requests.append(GrantRequest(pool=req.pool, address="", owner_id=req.owner_id,
                                               description=req.description))
            continue
        granted.append((it, res))
    done += _record_grants(ctx, site, granted)
    if retry_requests:
        again = ctx.call(f"vmm.grant_ips@{site}", lambda: vmm.grant_ips(retry_requests))
        retried = list(zip(retry_items, again, strict=True))
        for (it, res), out in zip(retried, _record_grants(ctx, site, retried), strict=True):
            if res.value is not None and res.ok:
                out.value = {"address": res.value.address, "planned": it.address,
                             "note": "planned address was taken meanwhile; VMM granted another"}
            done.append(out)
    return StepResult(items=done)


def _record_grants(ctx: ActionContext, site: str,
                   pairs: list[tuple[ReserveItem, ItemResult[IpGrant]]]) -> list[ItemOutcome]:
    """Journal what VMM granted (one transaction for the whole step, not one per address); one
    outcome per (item, result), in order. (The step's ports audit the grants.)"""
    conflicts = iter(ctx.journal.record_reservations([
        {"site": site, "pool": res.value.pool, "address": res.value.address, "owner_id": res.value.owner_id,
         "vm": it.vm, "nic": it.nic, "ip_index": it.ip_index, "purpose": it.purpose, "operation_id": ctx.op_id}
        for it, res in pairs if res.ok and res.value is not None]))
    done: list[ItemOutcome] = []
    for it, res in pairs:
        if res.error is not None or res.value is None:
            error = error_json(res.error) if res.error is not None else {
                "code": "internal_error", "category": "permanent", "message": "VMM returned no grant"}
            done.append(ItemOutcome(key=it.key, vm=it.vm, error=error))
            continue
        grant, conflict = res.value, next(conflicts)
        if conflict is not None:
            done.append(ItemOutcome(key=it.key, vm=it.vm, error=error_json(conflict)))
            continue
        done.append(ItemOutcome(key=it.key, vm=it.vm, changed=res.changed, value={"address": grant.address}))
    return done


def reserved_by_nic(ctx: ActionContext, vms: list[str], purpose: str) -> dict[tuple[str, str], dict[int, str]]:
    """(vm, nic) -> ip_index -> address granted in this operation (may differ from the plan),
    for many VMs in one query."""
    out: dict[tuple[str, str], dict[int, str]] = {}
    for r in ctx.journal.reservations(operation_id=ctx.op_id, purpose=purpose, vms=vms):
        out.setdefault((r.vm, r.nic), {})[r.ip_index] = r.address
    return out


@action("vmm.connect", ConnectArgs)
def connect(ctx: ActionContext, args: ConnectArgs) -> StepResult:
    """Connect NICs to their networks; a test VM's NIC gets the test addresses actually granted."""
    site = args.site
    items, skipped = ctx.live(args.items)
    tests = [it.vm for it in items if it.addresses and it.purpose == "test"]
    test_grants = reserved_by_nic(ctx, tests, "test") if tests else {}
    conns = []
    for it in items:
        addresses = it.addresses
        if addresses and it.purpose == "test":
            granted = test_grants.get((it.vm, it.nic), {})
            addresses = tuple((granted.get(i, a), p) for i, (a, p) in enumerate(addresses))
        conns.append(NicConnection(vm=it.target_vm, nic=it.nic, vm_network=it.vm_network,
                                   vm_subnet=it.vm_subnet, addresses=addresses))
    results = ctx.call(f"vmm.connect_nics@{site}", lambda: ctx.ports.vmm[site].connect_nics(conns)) if conns else []
    connected = outcomes(items, results)
    for it, out in zip(items, connected, strict=True):
        # Cleanup disconnects test NICs whose test VM may already be gone: nothing left to do.
        if it.missing_ok and out.error and out.error.get("code") == "not_found":
            out.error, out.skipped = None, "already gone"
    return StepResult(items=skipped + connected)


@action("vmm.create_test_networks", CreateTestNetworksArgs)
def create_test_networks(ctx: ActionContext, args: CreateTestNetworksArgs) -> StepResult:
    site = args.site
    specs = [TestNetworkSpec(name=it.name, copy_of=it.copy_of, description=f"{ctx.owner} test network op={ctx.op_id}")
             for it in args.items]
    results = ctx.call(f"vmm.create_test_networks@{site}", lambda: ctx.ports.vmm[site].create_test_networks(specs))
    return StepResult(items=outcomes(args.items, results))


@action("vmm.delete_test_networks", DeleteTestNetworksArgs)
def delete_test_networks(ctx: ActionContext, args: DeleteTestNetworksArgs) -> StepResult:
    site = args.site
    names = [it.name for it in args.items]
    results = ctx.call(f"vmm.delete_test_networks@{site}", lambda: ctx.ports.vmm[site].delete_test_networks(names))
    return StepResult(items=outcomes(args.items, results))


@action("vmm.revoke_test_grants", RevokeTestGrantsArgs)
def revoke_test_grants(ctx: ActionContext, args: RevokeTestGrantsArgs) -> StepResult:
    """Return every test reservation of the test failover being cleaned up: those the journal
    recorded, plus any grant in VMM still owned by a test VM NIC with the agent's marker (a test
    interrupted between grant and journal entry leaves one of those)."""
    site, parent = args.site, args.test_operation
    vmm = ctx.ports.vmm[site]
    inv = ctx.call(f"vmm.read_inventory@{site}", vmm.read_inventory)
    marker = f"{ctx.owner} op={parent} "
    grants = [g for g in inv.grants if g.description.startswith(marker) and "purpose=test" in g.description]
    recorded = {(r.pool, r.address) for r in ctx.journal.reservations(operation_id=parent, purpose="test")}
    grants += [g for g in inv.grants if (g.pool, g.address) in recorded and g not in grants]
    done: list[ItemOutcome] = []
    if grants:
        results = ctx.call(f"vmm.revoke_ips@{site}", lambda: vmm.revoke_ips(grants))
        for g, res in zip(grants, results, strict=True):
            if res.ok:
                ctx.journal.release_reservation(site=site, pool=g.pool, address=g.address)
            done.append(ItemOutcome(key=f"{g.pool}:{g.address}", changed=res.changed,
                                    error=error_json(res.error) if res.error else None))
    for pool, address in recorded - {(g.pool, g.address) for g in grants}:
        ctx.journal.release_reservation(site=site, pool=pool, address=address)  # already gone in VMM
    return StepResult(items=done)
