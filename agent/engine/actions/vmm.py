"""Step actions on a site's VMM: reserve addresses, connect NICs, create and delete test
networks, return a test failover's reservations.

Every grant VMM makes is journalled (the reservations the agent owns) and audited; a grant is
identified in VMM by a description carrying the agent's owner id, the operation, the VM, NIC,
IP configuration and purpose, so a grant made just before a crash is still found afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

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
GRANT_DEVIATION = "vmm.grant_deviation"
"""The audit action recording that VMM granted another address than the plan (and its preview) said."""
DEVIATION_NOTE = "planned address was taken meanwhile; VMM granted another, which the failover IP and DNS use"


def _grant_description(ctx: ActionContext, it: ReserveItem) -> str:
    return f"{ctx.owner} op={ctx.op_id} vm={it.vm} nic={it.nic} ip={it.ip_index} purpose={it.purpose}"


@action("vmm.reserve", ReserveArgs)
def reserve(ctx: ActionContext, args: ReserveArgs) -> StepResult:
    """Grant each planned address to its NIC. An address the plan chose freely (not a retained
    source address) that someone else took since planning is replaced by any free address of
    the same pool, chosen by VMM itself; the deviation is recorded (step outcome and audit) and
    every later step (failover IP, DNS) uses what was granted.

    Every request carries its marker, the grant description (:func:`_grant_description`): a
    grant an earlier attempt made -- one cut off before the journal heard of it, or one whose
    call timed out after VMM applied it -- is found by its marker and journalled, never asked
    for again. "Any free address" is not idempotent in VMM, so this is what keeps a retry from
    holding a second address nobody would ever return."""

    site = args.site
    items, skipped = ctx.live(args.items)
    inv = ctx.call(f"vmm.read_inventory@{site}", ctx.ports.vmm[site].read_inventory)
    # Test VM NICs only exist once the test failover has started: resolve their ids now.
    unresolved = {(it.owner_vm, it.nic) for it in items if not it.nic_id}
    ids = {(vm.name, nic.name): nic.id for vm in inv.vms for nic in vm.nics if (vm.name, nic.name) in unresolved}
    earlier = _marked(ctx, inv.grants)
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
    journalled = {(r.pool, r.address) for r in ctx.journal.reservations(operation_id=ctx.op_id, held=True,
                                                                        vms={it.vm for it in ready})}
    results = _grant(ctx, site, requests, earlier) if requests else []
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
    if retry_requests:
        again = _grant(ctx, site, retry_requests, {})
        granted += zip(retry_items, again, strict=True)
    order = {it.key: i for i, it in enumerate(ready)}
    granted.sort(key=lambda pair: order[pair[0].key])
    done += _record_grants(ctx, site, granted, journalled)
    return StepResult(items=done)


def _marked(ctx: ActionContext, grants: Sequence[IpGrant]) -> dict[str, IpGrant]:
    """This operation's grants in VMM, by their marker (description)."""
    mine = f"{ctx.owner} op={ctx.op_id} "
    return {g.description: g for g in grants if g.description.startswith(mine)}


def _grant(ctx: ActionContext, site: str, requests: list[GrantRequest],
           earlier: dict[str, IpGrant]) -> list[ItemResult[IpGrant]]:
    """One ``grant_ips`` call for the requests no grant carries the marker of yet (``earlier``:
    the grants found so far). A retried call may have taken effect before it failed: each retry
    reads VMM's grants again and asks only for what is still missing."""
    vmm = ctx.ports.vmm[site]
    found = dict(earlier)
    tries = 0

    def attempt() -> list[ItemResult[IpGrant]]:
        nonlocal tries
        tries += 1
        if tries > 1:
            found.update(_marked(ctx, vmm.read_inventory().grants))
        mine = {r.description: g for r in requests if (g := found.get(r.description)) is not None
                and (g.pool, g.owner_id) == (r.pool, r.owner_id)}
        todo = [r for r in requests if r.description not in mine]
        asked = iter(vmm.grant_ips(todo) if todo else [])
        return [ItemResult(f"{r.pool}:{g.address}", g) if (g := mine.get(r.description)) is not None
                else next(asked) for r in requests]

    return ctx.call(f"vmm.grant_ips@{site}", attempt)


def _record_grants(ctx: ActionContext, site: str, pairs: list[tuple[ReserveItem, ItemResult[IpGrant]]],
                   journalled: set[tuple[str, str]]) -> list[ItemOutcome]:
    """Journal what VMM granted (one transaction for the whole step, not one per address); one
    outcome per (item, result), in order. The step's ports audit the grants; a deviation from the
    plan among the grants not journalled before (``journalled``: this operation's, before this
    attempt) is recorded beside them."""
    conflicts = iter(ctx.journal.record_reservations([
        {"site": site, "pool": res.value.pool, "address": res.value.address, "owner_id": res.value.owner_id,
         "vm": it.vm, "nic": it.nic, "ip_index": it.ip_index, "purpose": it.purpose, "operation_id": ctx.op_id}
        for it, res in pairs if res.ok and res.value is not None]))
    done: list[ItemOutcome] = []
    deviations: list[tuple[str | None, object]] = []
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
        new = (grant.pool, grant.address) not in journalled
        value: dict[str, object] = {"address": grant.address}
        if grant.address != it.address:
            value.update(planned=it.address, note=DEVIATION_NOTE)
            if new:
                deviations.append((f"{it.vm}/{it.nic}", {
                    "vm": it.vm, "nic": it.nic, "ip_index": it.ip_index, "purpose": it.purpose, "pool": grant.pool,
                    "planned": it.address, "granted": grant.address}))
        done.append(ItemOutcome(key=it.key, vm=it.vm, changed=res.changed, value=value))
    ctx.journal.audit_many(actor=ctx.owner, action=GRANT_DEVIATION, operation_id=ctx.op_id, entries=deviations)
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
