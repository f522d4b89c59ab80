"""Step actions: each turns one journalled step into one batched port call.

Every action is idempotent -- it reads current state (or relies on an idempotent port) and acts
only on drift -- so re-running a step that was cut off mid-way changes nothing twice. Snapshots
of what an action overwrites are taken before the first change (first write wins), so cleanup,
cancel and failback can restore the exact original.
"""

from __future__ import annotations

from typing import Any

from agent.domain.model import FailoverIpSetting, IpGrant, NicFailoverConfig, RecordChange, RecordType, Route
from agent.engine.model import ItemOutcome, StepResult
from agent.engine.runner import ActionContext, action, error_json, log
from agent.errors import AgentError, ConflictError, TransientError
from agent.ports import GrantRequest, ItemResult, NicConnection, TestNetworkSpec

def _outcomes(items: list[dict[str, Any]], results: list[ItemResult]) -> list[ItemOutcome]:
    out = []
    for it, res in zip(items, results, strict=True):
        out.append(ItemOutcome(key=it["key"], vm=it.get("vm"), changed=res.changed,
                               error=error_json(res.error) if res.error else None))
    return out


def _tolerant(ctx: ActionContext, spec: dict[str, Any], items: list[dict[str, Any]], what: str, fn) -> list[ItemOutcome]:
    """Make the step's one port call and turn its results into outcomes.

    Unplanned failover: the source site may be gone. When the step is marked
    ``tolerate_unreachable`` and the call still fails transiently after retries, every item is
    recorded as skipped (with the reason) instead of failing its VM."""
    try:
        return _outcomes(items, ctx.call(what, fn))
    except TransientError as exc:
        if not spec.get("tolerate_unreachable"):
            raise
        return [ItemOutcome(key=it["key"], vm=it.get("vm"), skipped=f"unreachable: {exc.code}: {exc.message}")
                for it in items]


def _owner_description(ctx: ActionContext, it: dict[str, Any]) -> str:
    return (f"{ctx.config.agent.owner_id} op={ctx.op_id} vm={it['vm']} nic={it['nic']} "
            f"ip={it['ip_index']} purpose={it['purpose']}")


# ------------------------------------------------------------------------------ VMM


def _nic_ids(ctx: ActionContext, site: str, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    inv = ctx.call(f"vmm.read_inventory@{site}", ctx.drivers.vmm[site].read_inventory)
    return {(vm.name, nic.name): nic.id for vm in inv.vms for nic in vm.nics if (vm.name, nic.name) in wanted}


@action("vmm.reserve")
def reserve(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    """Grant each planned address to its NIC. An address the plan chose freely (not a retained
    source address) that someone else took since planning is replaced by any free address of
    the same pool, chosen by VMM itself; the deviation is recorded."""

    site = spec["site"]
    vmm = ctx.drivers.vmm[site]
    items, skipped = ctx.live(spec["items"])
    # Test VM NICs only exist once the test failover has started: resolve their ids now.
    unresolved = {(it["owner_vm"], it["nic"]) for it in items if not it.get("nic_id")}
    ids = _nic_ids(ctx, site, unresolved) if unresolved else {}
    outcomes: list[ItemOutcome] = list(skipped)
    requests, ready = [], []
    for it in items:
        nic_id = it.get("nic_id") or ids.get((it["owner_vm"], it["nic"]))
        if not nic_id:
            outcomes.append(ItemOutcome(key=it["key"], vm=it["vm"], error={
                "code": "not_found", "category": "permanent",
                "message": f"NIC {it['nic']} of {it['owner_vm']} not found at {site}", "vm": it["owner_vm"]}))
            continue
        it = dict(it, nic_id=nic_id)
        ready.append(it)
        requests.append(GrantRequest(pool=it["pool"], address=it["address"], owner_id=nic_id,
                                     description=_owner_description(ctx, it)))
    results = ctx.call(f"vmm.grant_ips@{site}", lambda: vmm.grant_ips(requests)) if requests else []
    retry_items, retry_requests, granted = [], [], []
    for it, req, res in zip(ready, requests, results, strict=True):
        if res.error and res.error.code in ("address_already_granted", "address_reserved") and it.get("flexible"):
            retry_items.append(it)
            retry_requests.append(GrantRequest(pool=req.pool, address="", owner_id=req.owner_id,
                                               description=req.description))
            continue
        granted.append((it, res))
    outcomes += _record_grants(ctx, site, granted)
    if retry_requests:
        again = ctx.call(f"vmm.grant_ips@{site}", lambda: vmm.grant_ips(retry_requests))
        retried = list(zip(retry_items, again, strict=True))
        for (it, res), out in zip(retried, _record_grants(ctx, site, retried), strict=True):
            if res.ok:
                out.value = {"address": res.value.address, "planned": it["address"],
                             "note": "planned address was taken meanwhile; VMM granted another"}
            outcomes.append(out)
    return StepResult(items=outcomes)


def _record_grants(ctx: ActionContext, site: str,
                   pairs: list[tuple[dict[str, Any], ItemResult[IpGrant]]]) -> list[ItemOutcome]:
    """Journal what VMM granted (one transaction for the whole step, not one per address) and
    audit the new grants; one outcome per (item, result), in order."""
    conflicts = iter(ctx.journal.record_reservations([
        {"site": site, "pool": res.value.pool, "address": res.value.address, "owner_id": res.value.owner_id,
         "vm": it["vm"], "nic": it["nic"], "ip_index": it["ip_index"], "purpose": it["purpose"],
         "operation_id": ctx.op_id}
        for it, res in pairs if res.ok]))
    outcomes, audits = [], []
    for it, res in pairs:
        if not res.ok:
            outcomes.append(ItemOutcome(key=it["key"], vm=it["vm"], error=error_json(res.error)))
            continue
        grant, conflict = res.value, next(conflicts)
        if conflict is not None:
            outcomes.append(ItemOutcome(key=it["key"], vm=it["vm"], error=error_json(conflict)))
            continue
        if res.changed:
            audits.append((f"{site}/{grant.pool}/{grant.address}", {"vm": it["vm"], "nic": it["nic"]}))
        outcomes.append(ItemOutcome(key=it["key"], vm=it["vm"], changed=res.changed, value={"address": grant.address}))
    ctx.journal.audit_many(actor=ctx.config.agent.owner_id, action="vmm.grant_ip", operation_id=ctx.op_id,
                           entries=audits)
    return outcomes


def reserved_addresses(ctx: ActionContext, vm: str, nic: str, purpose: str) -> dict[int, str]:
    """ip_index -> address actually granted in this operation (may differ from the plan)."""
    return reserved_by_nic(ctx, [vm], purpose).get((vm, nic), {})


def reserved_by_nic(ctx: ActionContext, vms: list[str], purpose: str) -> dict[tuple[str, str], dict[int, str]]:
    """(vm, nic) -> ip_index -> address granted in this operation, for many VMs in one query."""
    out: dict[tuple[str, str], dict[int, str]] = {}
    for r in ctx.journal.reservations(operation_id=ctx.op_id, purpose=purpose, vms=vms):
        out.setdefault((r.vm, r.nic), {})[r.ip_index] = r.address
    return out


@action("vmm.connect")
def connect(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    site = spec["site"]
    items, skipped = ctx.live(spec["items"])
    conns = []
    tests = [it["vm"] for it in items if it.get("addresses") and it.get("purpose") == "test"]
    test_grants = reserved_by_nic(ctx, tests, "test") if tests else {}
    for it in items:
        addresses = tuple(tuple(a) for a in it.get("addresses", []))
        if addresses and it.get("purpose") == "test":
            granted = test_grants.get((it["vm"], it["nic"]), {})
            addresses = tuple((granted.get(i, a), p) for i, (a, p) in enumerate(addresses))
        conns.append(NicConnection(vm=it["target_vm"], nic=it["nic"], vm_network=it["vm_network"],
                                   vm_subnet=it.get("vm_subnet"), addresses=addresses))
    results = ctx.call(f"vmm.connect_nics@{site}", lambda: ctx.drivers.vmm[site].connect_nics(conns)) if conns else []
    outcomes = _outcomes(items, results)
    for it, out in zip(items, outcomes, strict=True):
        # Cleanup disconnects test NICs whose test VM may already be gone: nothing left to do.
        if it.get("missing_ok") and out.error and out.error.get("code") == "not_found":
            out.error, out.skipped = None, "already gone"
    return StepResult(items=skipped + outcomes)


@action("vmm.create_test_networks")
def create_test_networks(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    site = spec["site"]
    items = spec["items"]
    specs = [TestNetworkSpec(name=it["name"], copy_of=it["copy_of"],
                             description=f"{ctx.config.agent.owner_id} test network op={ctx.op_id}") for it in items]
    results = ctx.call(f"vmm.create_test_networks@{site}", lambda: ctx.drivers.vmm[site].create_test_networks(specs))
    return StepResult(items=_outcomes(items, results))


@action("vmm.delete_test_networks")
def delete_test_networks(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    site = spec["site"]
    items = spec["items"]
    names = [it["name"] for it in items]
    results = ctx.call(f"vmm.delete_test_networks@{site}", lambda: ctx.drivers.vmm[site].delete_test_networks(names))
    return StepResult(items=_outcomes(items, results))


@action("vmm.revoke_test_grants")
def revoke_test_grants(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    """Return every test reservation of the test failover being cleaned up: those the journal
    recorded, plus any grant in VMM still owned by a test VM NIC with the agent's marker (a test
    interrupted between grant and journal entry leaves one of those)."""
    site = spec["site"]
    parent = spec["test_operation"]
    vmm = ctx.drivers.vmm[site]
    inv = ctx.call(f"vmm.read_inventory@{site}", vmm.read_inventory)
    marker = f"{ctx.config.agent.owner_id} op={parent} "
    grants = [g for g in inv.grants if g.description.startswith(marker) and "purpose=test" in g.description]
    recorded = {(r.pool, r.address) for r in ctx.journal.reservations(operation_id=parent, purpose="test")}
    grants += [g for g in inv.grants if (g.pool, g.address) in recorded and g not in grants]
    outcomes: list[ItemOutcome] = []
    if grants:
        results = ctx.call(f"vmm.revoke_ips@{site}", lambda: vmm.revoke_ips(grants))
        for g, res in zip(grants, results, strict=True):
            if res.ok:
                ctx.journal.release_reservation(site=site, pool=g.pool, address=g.address)
            outcomes.append(ItemOutcome(key=f"{g.pool}:{g.address}", changed=res.changed,
                                        error=error_json(res.error) if res.error else None))
    for pool, address in recorded - {(g.pool, g.address) for g in grants}:
        ctx.journal.release_reservation(site=site, pool=pool, address=address)  # already gone in VMM
    return StepResult(items=outcomes)


# ---------------------------------------------------------------------------- Hyper-V


def _host_action(ctx: ActionContext, spec: dict[str, Any], what: str, vm_field: str, call) -> StepResult:
    items, skipped = ctx.live(spec["items"])
    if spec.get("replica_action") == "start_test" and items:
        # Hyper-V refuses to start a test failover of a VM that has a test VM already. Creating
        # the operation refused VMs with a test failover running, so a test VM found now is this
        # operation's own, from an attempt cut off before its outcome was journalled: done.
        hv, host = ctx.drivers.hyperv[spec["site"]], spec["host"]
        reps = ctx.call(f"hyperv.get_replications@{host}",
                        lambda: hv.get_replications(host, [it["vm"] for it in items]))
        started = {r.vm for r in reps if r.test_vm}
        skipped += [ItemOutcome(key=it["key"], vm=it["vm"]) for it in items if it["vm"] in started]
        items = [it for it in items if it["vm"] not in started]
    if not items:
        return StepResult(items=skipped)
    site, host = spec["site"], spec["host"]
    vms = [it[vm_field] for it in items]
    return StepResult(items=skipped + _tolerant(ctx, spec, items, f"{what}@{host}",
                                                lambda: call(ctx.drivers.hyperv[site], host, vms)))


@action("hyperv.power")
def power(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    what = spec["power"]
    return _host_action(ctx, spec, f"hyperv.set_power.{what}", "target_vm",
                        lambda hv, host, vms: hv.set_power(host, what, vms))


@action("hyperv.replicate")
def replicate(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    what = spec["replica_action"]
    return _host_action(ctx, spec, f"hyperv.replicate.{what}", "vm",
                        lambda hv, host, vms: hv.replicate(host, what, vms))


@action("hyperv.set_failover")
def set_failover(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    """Set failover IPs just before failover, with the addresses actually reserved. The previous
    configuration is snapshotted first so a cancel can put it back."""
    site, host = spec["site"], spec["host"]
    hv = ctx.drivers.hyperv[site]
    items, skipped = ctx.live(spec["items"])
    if not items:
        return StepResult(items=skipped)
    current = ctx.call(f"hyperv.get_failover_configs@{host}",
                       lambda: hv.get_failover_configs(host, [(it["vm"], it["nic"]) for it in items]))
    by_nic = {(c.vm, c.nic): c for c in current}
    snaps: dict[str, Any] = {}
    for it in items:
        before = by_nic.get((it["vm"], it["nic"]))
        snaps.setdefault(f"{site}/{host}/{it['vm']}/{it['nic']}",
                         [s.model_dump(mode="json") for s in (before.settings if before else ())])
    ctx.journal.snapshot_many(scope=ctx.op_id, kind="failover_config", data=snaps)
    reserved = reserved_by_nic(ctx, [it["vm"] for it in items], "failover")
    configs = []
    for it in items:
        granted = reserved.get((it["vm"], it["nic"]), {})
        settings = []
        for setting in it["settings"]:
            setting = dict(setting)
            ip_index = setting.pop("ip_index")
            setting["address"] = granted.get(ip_index, setting["address"])
            settings.append(FailoverIpSetting.model_validate(setting))
        settings = tuple(settings)
        configs.append(NicFailoverConfig(vm=it["vm"], nic=it["nic"], host=host, settings=settings))
    results = ctx.call(f"hyperv.set_failover_configs@{host}", lambda: hv.set_failover_configs(host, configs))
    return StepResult(items=skipped + _outcomes(items, results))


@action("hyperv.restore_failover")
def restore_failover(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    """Put back the failover configuration snapshotted by operation ``scope``."""
    site, host, scope = spec["site"], spec["host"], spec["scope"]
    hv = ctx.drivers.hyperv[site]
    snaps = {s.key: s.data for s in ctx.journal.snapshots(scope=scope, kind="failover_config")}
    configs, items, cleared, unset = [], [], [], []
    for it in spec["items"]:
        key = f"{site}/{host}/{it['vm']}/{it['nic']}"
        if key not in snaps:
            continue
        if not snaps[key]:
            # There was none: remove ours (setting an empty configuration is refused).
            cleared.append(it)
            unset.append((it["vm"], it["nic"]))
            continue
        items.append(it)
        configs.append(NicFailoverConfig(vm=it["vm"], nic=it["nic"], host=host,
                                         settings=tuple(FailoverIpSetting.model_validate(s) for s in snaps[key])))
    outcomes: list[ItemOutcome] = []
    if configs:
        results = ctx.call(f"hyperv.set_failover_configs@{host}", lambda: hv.set_failover_configs(host, configs))
        outcomes += _outcomes(items, results)
    if unset:
        results = ctx.call(f"hyperv.clear_failover_configs@{host}", lambda: hv.clear_failover_configs(host, unset))
        outcomes += _outcomes(cleared, results)
    return StepResult(items=outcomes)


@action("hyperv.await_failover")
def await_failover(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    """Network-only mode: the outside orchestrator fails the VMs over. Wait (for an operator or
    the orchestrator to resume the operation) until every live VM of the group has failed over."""
    site = spec["site"]
    items, skipped = ctx.live(spec["items"])
    pending = []
    by_host: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        by_host.setdefault(it["host"], []).append(it)
    for host, its in by_host.items():
        reps = ctx.call(f"hyperv.get_replications@{host}",
                        lambda h=host, v=[i["vm"] for i in its]: ctx.drivers.hyperv[site].get_replications(h, v))
        states = {r.vm: r for r in reps}
        want = set(spec["states"])
        for it in its:
            rep = states.get(it["vm"])
            if rep is None or rep.state.value not in want or (spec.get("require_test_vm") and not rep.test_vm):
                pending.append(it["vm"])
    if pending:
        return StepResult(items=skipped, waiting=spec["instruction"].format(vms=", ".join(sorted(pending))))
    return StepResult(items=skipped + [ItemOutcome(key=it["key"], vm=it["vm"]) for it in items])


# ------------------------------------------------------------------------------ routes


def _route(d: dict[str, Any]) -> Route:
    return Route.model_validate(d)


def _snapshot_routes(ctx: ActionContext, router: str, prefixes: set[str]) -> None:
    current = ctx.call(f"routes.read@{router}", lambda: ctx.drivers.routes.read_routes(router, sorted(prefixes)))
    ctx.journal.snapshot_many(scope=ctx.op_id, kind="routes", data={
        f"{router}/{prefix}": [r.model_dump(mode="json") for r in current if r.prefix == prefix] for prefix in prefixes})


@action("routes.withdraw")
def withdraw(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    router = spec["router"]
    items = spec["items"]
    routes = [_route(it["route"]) for it in items]
    try:
        _snapshot_routes(ctx, router, {r.prefix for r in routes})
    except TransientError:
        if not spec.get("tolerate_unreachable"):
            raise
    return StepResult(items=_tolerant(ctx, spec, items, f"routes.withdraw@{router}",
                                      lambda: ctx.drivers.routes.withdraw(routes)))


@action("routes.announce")
def announce(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    router = spec["router"]
    items = spec["items"]
    routes = [_route(it["route"]) for it in items]
    _snapshot_routes(ctx, router, {r.prefix for r in routes})
    res = ctx.call(f"routes.announce@{router}", lambda: ctx.drivers.routes.announce(routes))
    return StepResult(items=_outcomes(items, res))


@action("routes.restore")
def routes_restore(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    """Put a router's routes for the prefixes operation ``scope`` changed back as they were."""
    router, scope = spec["router"], spec["scope"]
    snaps = [s for s in ctx.journal.snapshots(scope=scope, kind="routes") if s.key.startswith(router + "/")]
    if not snaps:
        return StepResult()
    prefixes = sorted({s.key[len(router) + 1:] for s in snaps})
    now = {r for r in ctx.call(f"routes.read@{router}", lambda: ctx.drivers.routes.read_routes(router, prefixes))}
    before = {_route(d) for s in snaps for d in s.data}
    extra, missing = sorted(now - before, key=str), sorted(before - now, key=str)
    outcomes: list[ItemOutcome] = []
    if extra:
        res = ctx.call(f"routes.withdraw@{router}", lambda: ctx.drivers.routes.withdraw(extra))
        outcomes += _outcomes([{"key": f"withdraw {r.prefix}@{router}"} for r in extra], res)
    if missing:
        res = ctx.call(f"routes.announce@{router}", lambda: ctx.drivers.routes.announce(missing))
        outcomes += _outcomes([{"key": f"announce {r.prefix}@{router}"} for r in missing], res)
    return StepResult(items=outcomes)


# --------------------------------------------------------------------------------- DNS


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        return host, int(port.lstrip(":") or default_port)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default_port


def verify_applied(ctx: ActionContext, server: str, zone: str, changes: list[RecordChange]) -> dict[str, Any] | None:
    """Ask every authoritative server of the zone (configured, else the server written to) until
    all answer the new data or the server's verify timeout passes. A lagging server is reported
    with what it still answers -- not an error: the update itself is in place and will spread."""
    from agent.dns.verify import verify

    cfg = next((d for d in ctx.config.dns.servers if d.name == server), None)
    if cfg is None or cfg.kind == "sim" or not cfg.address or cfg.verify_timeout_s == 0 or not changes:
        return None
    servers = [_host_port(s, 53) for s in cfg.verify_servers] or [(cfg.address, cfg.port)]
    resolvers = [_host_port(s, 53) for s in cfg.verify_resolvers]
    report = verify(zone, changes, servers=servers, resolvers=resolvers, timeout_s=cfg.verify_timeout_s,
                    query_timeout_s=min(2.0, cfg.timeout_s))
    if not report.ok:
        log.warning("DNS servers lag behind the update", zone=zone, server=server, summary=report.summary())
    return report.to_dict()


def dns_snapshot_key(server: str, zone: str, name: str, rtype: str) -> str:
    """How a DNS record set's snapshot is keyed (apply, restore and failback must agree)."""
    return f"{server}|{zone}|{name}|{rtype}"


def _written_in_zone(ctx: ActionContext, server: str, zone: str, scope: str, keep) -> list[tuple[Any, str, str, Any]]:
    """The record sets operation ``scope`` wrote in ``zone`` (their snapshots, filtered by
    ``keep``), each with what the server holds now: (snapshot, name, type, current or None)."""
    prefix = f"{server}|{zone}|"
    snaps = [s for s in ctx.journal.snapshots(scope=scope, kind="dns")
             if s.key.startswith(prefix) and s.written and keep(s)]
    if not snaps:
        return []
    keys = [tuple(s.key[len(prefix):].rsplit("|", 1)) for s in snaps]
    dns = ctx.drivers.dns[server]
    current = {(r.name, r.type.value): r for r in ctx.call(
        f"dns.read@{server}", lambda: dns.read(zone, [(n, RecordType(t)) for n, t in keys]))}
    return [(snap, name, rtype, current.get((name, rtype))) for snap, (name, rtype) in zip(snaps, keys, strict=True)]


def _send_dns(ctx: ActionContext, server: str, zone: str, changes: list[RecordChange]) -> dict[str, Any] | None:
    """One atomic update of ``zone``. Transient errors propagate (the runner retries the step);
    a permanent refusal is returned as the error of every change in it."""
    try:
        ctx.call(f"dns.apply@{server}", lambda: ctx.drivers.dns[server].apply(zone, changes))
    except AgentError as exc:
        if exc.transient:
            raise
        return error_json(exc)
    return None


@action("dns.apply")
def dns_apply(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    """Write the planned record sets of one zone in one atomic batch, pinned to what is there.

    A record set that already holds the new values is left alone (idempotent). One that holds
    neither the planned old values nor the new ones was changed by someone else since planning:
    it is reported, never clobbered. What was there first is snapshotted for cleanup/failback.
    """
    server, zone = spec["server"], spec["zone"]
    dns = ctx.drivers.dns[server]
    items, skipped = ctx.live(spec["items"])
    if not items:
        return StepResult(items=skipped)
    names = [(it["name"], RecordType(it["type"])) for it in items]
    current = {(r.name, r.type.value): r for r in ctx.call(f"dns.read@{server}", lambda: dns.read(zone, names))}
    outcomes: list[ItemOutcome] = list(skipped)
    changes, pending = [], []
    snaps: dict[str, Any] = {}
    for it in items:
        now = current.get((it["name"], it["type"]))
        snaps.setdefault(dns_snapshot_key(server, zone, it["name"], it["type"]),
                         {"values": list(tuple(sorted(now.values)) if now else ()), "ttl": now.ttl if now else None})
    ctx.journal.snapshot_many(scope=ctx.op_id, kind="dns", data=snaps)
    originals = {s.key: s.data for s in ctx.journal.snapshots(scope=ctx.op_id, kind="dns", keys=snaps)}
    recovered: dict[str, Any] = {}
    for it in items:
        now = current.get((it["name"], it["type"]))
        now_values = tuple(sorted(now.values)) if now else ()
        new = tuple(sorted(it["new_values"]))
        if now_values == new and (not new or now.ttl == it["ttl"]):
            key = dns_snapshot_key(server, zone, it["name"], it["type"])
            first = originals.get(key)
            if first is not None and (tuple(first["values"]) != now_values or (new and first["ttl"] != now.ttl)):
                # This operation wrote it and was cut off before journalling that: record it now,
                # or a later restore would not know the record is the agent's to put back.
                recovered[key] = {"values": list(new), "ttl": it["ttl"]}
            outcomes.append(ItemOutcome(key=it["key"], vm=it.get("vm")))
            continue
        if now_values != tuple(sorted(it["old_values"])) and not it.get("force"):
            outcomes.append(ItemOutcome(key=it["key"], vm=it.get("vm"), error={
                "code": "dns_foreign_change", "category": "permanent",
                "message": (f"{it['name']} {it['type']} holds {list(now_values)} but the plan expected "
                            f"{list(it['old_values'])}: changed by someone else since planning; not overwritten"),
                "zone": zone, "record": it["name"], "type": it["type"], "server": server}))
            continue
        changes.append(RecordChange(zone=zone, name=it["name"], type=RecordType(it["type"]), ttl=it["ttl"],
                                    expected=now_values, new_values=new))
        pending.append(it)
    if recovered:
        ctx.journal.manage_records([tuple(k.split("|")[1:]) for k in recovered], "written")
        ctx.journal.set_written_many(scope=ctx.op_id, kind="dns", written=recovered)
    if changes:
        refused = _send_dns(ctx, server, zone, changes)
        if refused is not None:
            outcomes += [ItemOutcome(key=it["key"], vm=it.get("vm"), error=refused) for it in pending]
            return StepResult(items=outcomes)
        verification = verify_applied(ctx, server, zone, changes)
        done = list(zip(pending, changes, strict=True))
        ctx.journal.manage_records([(zone, ch.name, ch.type.value) for _, ch in done], "written")
        ctx.journal.set_written_many(scope=ctx.op_id, kind="dns", written={
            dns_snapshot_key(server, zone, it["name"], it["type"]): {"values": list(ch.new_values), "ttl": ch.ttl}
            for it, ch in done})
        ctx.journal.audit_many(actor=ctx.config.agent.owner_id, action="dns.replace", operation_id=ctx.op_id,
                               entries=[(f"{server}/{it['name']}/{it['type']}",
                                         {"old": list(ch.expected), "new": list(ch.new_values), "ttl": ch.ttl})
                                        for it, ch in done])
        outcomes += [ItemOutcome(key=it["key"], vm=it.get("vm"), changed=True) for it, _ in done]
        if verification is not None:
            return StepResult(items=outcomes, info={"verification": verification})
    return StepResult(items=outcomes)


@action("dns.restore")
def dns_restore(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    """Put back the record sets operation ``scope`` changed in one zone, exactly (values and
    TTL), pinned to what the agent wrote: a record someone changed since is reported, not
    clobbered."""
    server, zone, scope = spec["server"], spec["zone"], spec["scope"]
    outcomes, changes, pending = [], [], []
    for snap, name, rtype, now in _written_in_zone(ctx, server, zone, scope, keep=lambda s: True):
        now_values = tuple(sorted(now.values)) if now else ()
        original = tuple(sorted(snap.data["values"]))
        key = f"{name}/{rtype}"
        if now_values == original and (not original or now.ttl == snap.data["ttl"]):
            outcomes.append(ItemOutcome(key=key))
            continue
        if now_values != tuple(sorted(snap.written["values"])):
            outcomes.append(ItemOutcome(key=key, error={
                "code": "dns_foreign_change", "category": "permanent", "zone": zone, "record": name, "type": rtype,
                "message": (f"{name} {rtype} holds {list(now_values)}, not what the agent wrote "
                            f"({snap.written['values']}): changed by someone else; not restored")}))
            continue
        changes.append(RecordChange(zone=zone, name=name, type=RecordType(rtype),
                                    ttl=snap.data["ttl"] if snap.data["ttl"] is not None else 0,
                                    expected=now_values, new_values=original))
        pending.append(key)
    if changes:
        refused = _send_dns(ctx, server, zone, changes)
        if refused is not None:
            return StepResult(items=outcomes + [ItemOutcome(key=k, error=refused) for k in pending])
        for ch in changes:
            ctx.journal.store.audit(actor=ctx.config.agent.owner_id, action="dns.restore", operation_id=ctx.op_id,
                                    target=f"{server}/{ch.name}/{ch.type.value}",
                                    details={"from": list(ch.expected), "to": list(ch.new_values), "ttl": ch.ttl})
        outcomes += [ItemOutcome(key=k, changed=True) for k in pending]
        verification = verify_applied(ctx, server, zone, changes)
        if verification is not None:
            return StepResult(items=outcomes, info={"verification": verification})
    return StepResult(items=outcomes)


@action("dns.restore_ttl")
def dns_restore_ttl(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    """After commit: the records a failover wrote with the low failover TTL get the TTL they had
    before (values unchanged), pinned to what the agent wrote."""
    server, zone, scope = spec["server"], spec["zone"], spec["scope"]
    low = ctx.config.dns.ttl.failover_ttl
    lowered = _written_in_zone(ctx, server, zone, scope, keep=lambda s: bool(
        s.written["values"] and s.written["ttl"] == low and s.data["ttl"] not in (None, low)))
    outcomes, changes, pending = [], [], []
    for snap, name, rtype, now in lowered:
        key = f"{name}/{rtype}"
        written = tuple(sorted(snap.written["values"]))
        if now is None or tuple(sorted(now.values)) != written:
            outcomes.append(ItemOutcome(key=key, skipped="changed since the failover wrote it; TTL left alone"))
            continue
        if now.ttl == snap.data["ttl"]:
            outcomes.append(ItemOutcome(key=key))
            continue
        changes.append(RecordChange(zone=zone, name=name, type=RecordType(rtype), ttl=snap.data["ttl"],
                                    expected=written, new_values=written))
        pending.append(key)
    if changes:
        refused = _send_dns(ctx, server, zone, changes)
        if refused is not None:
            return StepResult(items=outcomes + [ItemOutcome(key=k, error=refused) for k in pending])
        outcomes += [ItemOutcome(key=k, changed=True) for k in pending]
    return StepResult(items=outcomes)


@action("dns.wait_ttl")
def dns_wait_ttl(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    """Wait out the old TTL after lowering it, so no resolver still caches the old answer for
    longer than the new TTL. The deadline is journalled on the first attempt, so a restarted
    agent waits only for what is left."""
    from datetime import datetime, timedelta

    from agent.engine.store import utcnow

    key = spec["key"]
    ctx.journal.snapshot(scope=ctx.op_id, kind="deadline", key=key,
                         data=(utcnow() + timedelta(seconds=spec["seconds"])).isoformat())
    deadline = datetime.fromisoformat(next(s.data for s in ctx.journal.snapshots(scope=ctx.op_id, kind="deadline")
                                           if s.key == key))
    left = (deadline - utcnow()).total_seconds()
    if left > 0:
        log.info("waiting out the old DNS TTL", operation=ctx.op_id, seconds=round(left, 1))
        ctx.sleep(left)
    return StepResult(info={"waited_s": max(0.0, round(left, 3)), "ttl_s": spec["seconds"]})


# ------------------------------------------------------------------ scripts and pauses


@action("manual")
def manual(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    """Wait for an operator. The step succeeds only when an operator resumes the operation."""
    return StepResult(waiting=spec["instruction"])


@action("script")
def script(ctx: ActionContext, spec: dict[str, Any]) -> StepResult:
    runner = getattr(ctx.drivers, "scripts", None)
    if runner is None:
        raise ConflictError("no script runner is configured for this site", host=spec["host"])
    result = ctx.call(f"script@{spec['host']}", lambda: runner.run_script(
        spec["host"], spec["path"], spec.get("parameters", {}), spec.get("timeout_s", 600)))
    item = ItemOutcome(key=f"{spec['host']}:{spec['path']}", changed=True, value=result.model_dump(mode="json")
                       if hasattr(result, "model_dump") else result)
    if getattr(result, "succeeded", True) is False:
        item.error = {"code": "script_failed", "category": "permanent", "host": spec["host"],
                      "message": f"script {spec['path']} on {spec['host']} failed: {getattr(result, 'error', '')}"}
    return StepResult(items=[item])
