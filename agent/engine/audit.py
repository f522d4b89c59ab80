"""The audit trail of a step's outside changes, kept in one place: the step's ports are wrapped
so that every call of a changing method (``agent.ports.PORT_CHANGES``) is recorded with what
was there before and what is there after, whichever action made it.

* **Durable first.** Before the call, one row per item is committed with ``result`` pending
  and the intended "after"; after the call the row is completed (changed, unchanged, refused,
  or the call's error). A kill between the two leaves the pending row, and the step's next run
  completes it -- so a change is in the trail before the step's outcome is journalled.
* **Once.** A row is keyed by the step and the call (method and item), unique per operation: a
  retried or resumed step completes the row of its earlier attempt instead of adding one, and a
  change an earlier attempt made stays ``changed`` when the next attempt finds it in place.
* **Changes only.** An item the call found already as asked (the ports are idempotent) changed
  nothing: its pending row is withdrawn in the transaction that would complete it. One left by
  an attempt that was cut off stays, saying what the next attempt found.
* **Before and after** come from what the step read through the same ports just before (the
  reads are remembered per step), from the call's inputs, and from what the call returned; the
  agent makes no extra call to the sites for the trail. Where the step read nothing, "before"
  follows from the port contract (an idempotent call that changed something found it otherwise).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update

from agent.domain.model import (
    FailoverIpSetting,
    IpGrant,
    Nic,
    NicFailoverConfig,
    Replication,
    Route,
    VirtualMachine,
)
from agent.engine.bookkeeping import chunks as _chunks
from agent.engine.steps import CONTEXT_PARAMETER
from agent.engine.store import AuditRow, JsonText, Store
from agent.errors import AgentError, PermanentError
from agent.logging import REDACTED, redact_secrets
from agent.ports import (
    PORT_CHANGES,
    PORT_READS,
    Dns,
    HyperV,
    ItemResult,
    Ports,
    Routes,
    ScriptResult,
    Scripts,
    Vmm,
)

P = TypeVar("P")

_AUDIT: Table = AuditRow.__table__  # type: ignore[assignment]
_DETAILS_BY_KEY = (update(_AUDIT)
                   .where(_AUDIT.c.operation_id == bindparam("b_op"), _AUDIT.c.key == bindparam("b_key"))
                   .values(details=bindparam("b_details", type_=JsonText())))
"""Completes one change's row by its (unique) operation and key: run for many at once."""

PENDING = "pending"
CHANGED = "changed"
UNCHANGED = "unchanged"
REFUSED = "refused"
FAILED = "call failed"
"""The call itself failed (timeout, unreachable): some of it may have taken effect."""
SUCCEEDED = "succeeded"

SCRIPT_STREAM_CAP = 64 * 1024
"""Bytes kept of each of a script's output streams (stdout, stderr), with the journal's step
outcome and in the audit trail: enough for a health check's report, not a log file's."""

# What each Hyper-V Replica action leaves, by the port contract: the "before" of a replication
# change the step did not read first.
_REPLICA_FROM: dict[str, str] = {
    "prepare": "Replicating",
    "failover": "Replicating or PreparedForFailover",
    "start_test": "Replicating, no test VM",
    "stop_test": "Replicating with a test VM",
    "cancel": "PreparedForFailover or FailedOverWaitingCompletion",
    "complete": "FailedOverWaitingCompletion",
    "reverse": "FailedOver",
}
_POWER_TO = {"start": "Running", "stop": "Off"}


# ------------------------------------------------------------------------------ scripts


def _capped(text: str) -> tuple[str, int | None]:
    """``text`` cut to :data:`SCRIPT_STREAM_CAP` bytes (UTF-8), and its whole size when cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= SCRIPT_STREAM_CAP:
        return text, None
    # Cut at a character boundary: a character split in two would not decode.
    return data[:SCRIPT_STREAM_CAP].decode("utf-8", "ignore"), len(data)


def secret_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Script parameters as they may be written down: values under secret-looking keys
    (``password``, ``token`` ...) replaced by ``***``, as in the logs."""
    scrubbed: dict[str, Any] = redact_secrets(None, "audit", dict(parameters))
    return scrubbed


def script_record(result: ScriptResult, parameters: dict[str, Any]) -> dict[str, Any]:
    """What is kept of a script run (the step's outcome and its audit row): how it ended, the
    JSON document it wrote, and each output stream up to :data:`SCRIPT_STREAM_CAP` bytes, saying
    when one was cut. Secret parameters are scrubbed everywhere, their values too where the
    script printed them."""
    # Values of secret parameters, wherever the script echoed them; not ones too short to be
    # told from ordinary text (replacing every "1" would garble the output and hide nothing).
    hidden = [v for k, v in parameters.items()
              if isinstance(v, str) and len(v) >= 3 and secret_parameters({k: v})[k] == REDACTED]

    def scrub(text: str) -> str:
        for value in hidden:
            text = text.replace(value, REDACTED)
        return text

    record: dict[str, Any] = {"host": result.host, "path": result.path, "succeeded": result.succeeded,
                              "error": scrub(result.error) if result.error else None,
                              "duration_s": result.duration_s,
                              "output": redact_secrets(None, "audit", dict(result.output)),
                              "parameters": secret_parameters(parameters)}
    if hidden:
        record["output"] = _scrub_values(record["output"], scrub)
    for stream in ("stdout", "stderr"):
        kept, whole = _capped(scrub(getattr(result, stream)))
        record[stream] = kept
        if whole is not None:
            record[f"{stream}_truncated"] = {"kept_bytes": len(kept.encode("utf-8")), "total_bytes": whole}
    return record


def _scrub_values(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_values(v, scrub) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_values(v, scrub) for v in value]
    return value


# ------------------------------------------------------------------------------- rows


@dataclass
class Change:
    """One item of a changing call, as the audit trail records it."""

    key: str
    target: str
    before: Any
    """What the step saw before the call; None when it read nothing."""
    after: Any
    """What the call asks for (the call's own answer replaces it)."""
    assumed: bool = False
    """``before`` is what the call's inputs imply, true only if the call changes something."""


@dataclass(frozen=True)
class Done:
    """How one change ended: ``result`` (changed, unchanged, refused, call failed, a script's
    succeeded or failed), with the error code when it did not take effect, and the before and
    after learnt from the call (``None``: as written when the call began)."""

    result: str
    before: Any = None
    after: Any = None
    error: str | None = None


@dataclass
class StepAudit:
    """The audit trail of one run of one step: writes its changes' rows, and remembers what
    the step read (the "before" of its changes)."""

    store: Store
    operation_id: str
    actor: str
    ordinal: int
    step: str
    seen: dict[tuple[str, ...], Any] = field(default_factory=dict)
    fresh: set[str] = field(default_factory=set)
    """Keys of the rows this run of the step wrote (the others are an earlier attempt's)."""
    inventories: dict[str, list[Any]] = field(default_factory=dict)
    """Site -> the VMM inventories the step read there, oldest first."""
    written: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Key -> the details this run of the step last wrote in that row: completing it needs no
    read of what was just written (an earlier attempt's row is read)."""

    def begin(self, action: str, changes: Sequence[Change]) -> None:
        """Commit a pending row per change not already in the trail (an earlier attempt's)."""
        keys = [f"{self.ordinal}:{action}:{c.key}" for c in changes]
        with self.store.session() as s:
            have = set(s.scalars(select(AuditRow.key).where(AuditRow.operation_id == self.operation_id,
                                                            AuditRow.key.in_(keys))))
            new = [(k, c) for k, c in zip(keys, changes, strict=True) if k not in have]
            rows: list[dict[str, Any]] = [
                {"actor": self.actor, "action": action, "target": c.target, "operation_id": self.operation_id,
                 "key": k, "details": {"step": self.step, "before": c.before, "after": c.after, "result": PENDING}}
                for k, c in new]
            if rows:
                s.execute(insert(AuditRow), rows)
        self.fresh.update(k for k, _ in new)
        self.written.update((r["key"], r["details"]) for r in rows)

    def finish(self, action: str, changes: Sequence[Change], results: Sequence[Done]) -> None:
        """Complete each change's row. A change an earlier attempt made stays ``changed`` when
        this one finds it in place; one an attempt cut off may have made is told apart by what
        that attempt saw before it (kept in the row)."""
        done = {f"{self.ordinal}:{action}:{c.key}": r for c, r in zip(changes, results, strict=True)}
        with self.store.session() as s:
            rows = {k: self.written[k] for k in done if k in self.written}
            for chunk in _chunks([k for k in done if k not in rows]):
                rows.update((k, d) for k, d in s.execute(select(AuditRow.key, AuditRow.details).where(
                    AuditRow.operation_id == self.operation_id, AuditRow.key.in_(chunk))))
            updates: list[dict[str, Any]] = []
            withdrawn: list[str] = []
            for key, details in rows.items():
                d, old = done[key], dict(details or {})
                before, after, result = d.before, d.after, d.result
                was = old.get("result")
                if was == CHANGED and result != CHANGED:
                    continue  # it was made; what a later attempt finds does not undo that
                if result == UNCHANGED and was == PENDING and key in self.fresh:
                    withdrawn.append(key)  # asked for what already held: no change to record
                    continue
                if was in (PENDING, FAILED) and result == UNCHANGED:
                    # An earlier attempt was cut off (killed, or its call failed) after the call
                    # may have taken effect: what it saw before is the truth to compare with.
                    before = old.get("before")
                    if before is not None and before != (after if after is not None else old.get("after")):
                        result, old["note"] = CHANGED, "made by an earlier attempt that was cut off"
                    else:
                        old["note"] = "in place after an earlier attempt was cut off (it may have made it)"
                old["result"] = result
                if d.error is not None:
                    old["error"] = d.error
                else:
                    old.pop("error", None)
                if before is not None:
                    old["before"] = before
                if after is not None:
                    old["after"] = after
                updates.append({"b_op": self.operation_id, "b_key": key, "b_details": old})
            if updates:
                s.connection().execute(_DETAILS_BY_KEY, updates)
            for chunk in _chunks(withdrawn):
                s.execute(delete(AuditRow).where(AuditRow.operation_id == self.operation_id,
                                                 AuditRow.key.in_(chunk)))
        self.written.update((u["b_key"], u["b_details"]) for u in updates)
        for key in withdrawn:
            self.written.pop(key, None)

    def made_earlier(self, prefix: str, names: Collection[str]) -> dict[str, Any]:
        """target -> the "after" of the last change this operation's earlier steps made with an
        action starting ``prefix`` (what a VM's replication became, a step ago), of the targets
        whose last part is one of ``names``. Only those rows' details are read: an operation's
        earlier changes are thousands of rows at 10,000 VMs, and this is asked at every step."""
        with self.store.session() as s:
            ids = [i for i, t in s.execute(select(AuditRow.id, AuditRow.target).where(
                AuditRow.operation_id == self.operation_id, AuditRow.action.startswith(prefix),
                AuditRow.key.is_not(None))) if t is not None and t.rsplit("/", 1)[-1] in names]
            rows: list[Any] = []
            for chunk in _chunks(ids):
                rows += s.execute(select(AuditRow.id, AuditRow.target, AuditRow.details).where(
                    AuditRow.id.in_(chunk))).all()
        rows.sort(key=lambda r: r.id)
        return {r.target: r.details["after"] for r in rows
                if r.details.get("result") == CHANGED and r.details.get("step") != self.step}

    def saw_inventory(self, where: str, inv: Any) -> None:
        """A site's VMM inventory as the step read it. Its NICs are looked up only if the step
        changes one: most steps that read it (the reserve, every stop) connect none, and indexing
        every NIC of a 10,000-VM site at each read was most of what the trail cost them."""
        self.inventories.setdefault(where, []).append(inv)
        self.seen.pop(("nics", where), None)

    def nic(self, where: str, vm: str, nic: str) -> Nic | None:
        """The NIC as the step last read it in ``where``'s inventory (None: not read)."""
        index = self.seen.get(("nics", where))
        if index is None:
            index = {(v.name, n.name): n for inv in self.inventories.get(where, ()) for v in inv.vms for n in v.nics}
            self.seen[("nics", where)] = index
        found: Nic | None = index.get((vm, nic))
        return found

    def remember(self, what: tuple[str, ...], value: Any) -> None:
        self.seen[what] = value

    def recall(self, what: tuple[str, ...]) -> Any:
        return self.seen.get(what)


# -------------------------------------------------------------------- shapes of values


def _nic_state(nic: Nic | None) -> Any:
    if nic is None:
        return None
    return _connection(nic.vm_network, nic.vm_subnet,
                       [f"{c.address}/{c.prefix_length}" for c in nic.ip_configurations if c.address])


def _connection(network: str | None, subnet: str | None, addresses: list[str]) -> dict[str, Any]:
    """A NIC's connection: its network and subnet, and the static addresses it is given."""
    out: dict[str, Any] = {"network": network or "disconnected", "subnet": subnet}
    if addresses:
        out["addresses"] = addresses
    return out


def _settings(settings: Iterable[FailoverIpSetting]) -> list[str]:
    return [f"{s.address}/{s.prefix_length}" + (f" gw {s.gateway}" if s.gateway else "")
            + (f" dns {','.join(s.dns_servers)}" if s.dns_servers else "") for s in settings]


def _route(r: Route) -> str:
    if r.announced_network:  # a BGP custom route: the prefix is the whole route
        return "announced"
    return f"via {r.next_hop or r.interface} metric {r.metric}"


def _replica(r: Replication) -> Any:
    out: dict[str, Any] = {"state": r.state.value}
    if r.test_vm:
        out["test_vm"] = r.test_vm
    if r.failover_point:
        out["recovery_point"] = r.failover_point
    return out


def _owner(description: str, owner_id: str) -> str:
    """Whom a grant is for, from the agent's own description (``vm=... nic=...``)."""
    words = dict(w.split("=", 1) for w in description.split() if "=" in w)
    return f"{words['vm']}/{words['nic']}" if "vm" in words and "nic" in words else owner_id


# ---------------------------------------------------------------- the audited ports


class _Audited:
    """A port with the same interface whose changing calls are audited (see the module)."""

    def __init__(self, port: Any, kind: str, where: str, protocol: type, audit: StepAudit) -> None:
        self._port, self._kind, self._where, self._audit = port, kind, where, audit
        self._protocol = protocol
        self._reads, self._changes = PORT_READS[protocol], PORT_CHANGES[protocol]

    def _arguments(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The call's arguments in the protocol's order, defaults filled in."""
        bound = inspect.signature(getattr(self._protocol, name)).bind(None, *args, **kwargs)
        bound.apply_defaults()
        return tuple(bound.arguments.values())[1:]

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._port, name)
        if not callable(attr):
            return attr
        if name in self._reads:
            def read(*args: Any, **kwargs: Any) -> Any:
                value = attr(*args, **kwargs)
                getattr(self, f"_saw_{name}")(*self._arguments(name, args, kwargs), value)
                return value
            return read
        if name in self._changes:
            return lambda *args, **kwargs: self._change(name, attr, self._arguments(name, args, kwargs))
        raise PermanentError(f"the {self._kind} port's method {name} is neither a read nor a change in "
                             "agent.ports (PORT_READS, PORT_CHANGES): classify it before a step calls it",
                             method=name)

    def _change(self, name: str, call: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        action = f"{self._kind}.{name}"
        if self._kind == "hyperv" and name in ("replicate", "set_power"):
            action += f".{args[1]}"
        changes: list[Change] = getattr(self, f"_{name}")(*args)
        self._audit.begin(action, changes)
        try:
            value = call(*args)
        except AgentError as exc:
            self._audit.finish(action, changes, [Done(FAILED, error=exc.code)] * len(changes))
            raise
        self._audit.finish(action, changes, self._outcome(name, args, changes, value))
        return value

    def _outcome(self, name: str, args: tuple[Any, ...], changes: list[Change],
                 value: Any) -> list[Done]:
        if name == "apply":  # DNS: the zone's batch is atomic; a refusal raised above
            return [Done(CHANGED)] * len(changes)
        if name == "run_script":
            # Kept as the step keeps it: the config's parameters (the Context is in "before").
            configured = {k: v for k, v in args[2].items() if k != CONTEXT_PARAMETER}
            return [Done(SUCCEEDED if value.succeeded else "failed", after=script_record(value, configured))]
        out = []
        for change, res in zip(changes, cast(list[ItemResult[Any]], value), strict=True):
            if res.error is not None:
                out.append(Done(REFUSED, error=res.error.code))
                continue
            before, after = self._infer(name, args, change, res)
            out.append(Done(CHANGED if res.changed else UNCHANGED, before, after))
        return out

    def _infer(self, name: str, args: tuple[Any, ...], change: Change, res: ItemResult[Any]) -> tuple[Any, Any]:
        """(before, after) of an item the call accepted, from what it returned."""
        v = res.value
        after: Any = None
        if isinstance(v, IpGrant):
            after = {"address": v.address, "granted_to": _owner(v.description, v.owner_id)}
        elif isinstance(v, Nic):
            after = _nic_state(v)
        elif isinstance(v, Replication):
            after = _replica(v)
        elif isinstance(v, VirtualMachine):
            after = v.power_state.value
        elif isinstance(v, NicFailoverConfig):
            after = _settings(v.settings) or "none"
        if not res.changed:
            same = after if after is not None else change.after
            return (same if change.before is None or change.assumed else None), after
        if change.before is None:
            if name == "set_power":
                return ("Off" if args[1] == "start" else "Running"), after
            if name == "replicate":
                return _REPLICA_FROM.get(args[1], "?"), after
            if name == "grant_ips":
                return "free", after
        return None, after

    # -- reads: remember what the step saw

    def _saw_read_inventory(self, inv: Any) -> None:
        self._audit.saw_inventory(self._where, inv)

    def _saw_get_failover_configs(self, host: str, nics: Any, configs: Any) -> None:
        for c in configs:
            self._audit.remember(("failover", self._where, host, c.vm, c.nic), c.settings)

    def _saw_get_replications(self, host: str, vms: Any, reps: Any) -> None:
        for r in reps:
            self._audit.remember(("replica", self._where, host, r.vm), r)

    def _saw_read(self, zone: str, names: Any, sets: Any) -> None:
        found = {(r.name, r.type.value): r for r in sets}
        for name, rtype in names:
            self._audit.remember(("dns", self._where, zone, name, str(rtype.value)), found.get((name, rtype.value)))

    def _saw_verify(self, zone: str, changes: Any, report: Any) -> None:
        pass

    def _saw_read_routes(self, router: str, prefixes: Any, routes: Any) -> None:
        for prefix in prefixes if prefixes is not None else {r.prefix for r in routes}:
            self._audit.remember(("routes", router, prefix), [r for r in routes if r.prefix == prefix])

    # -- changes: what each item is, and what the step saw of it

    def _grant_ips(self, requests: Any) -> list[Change]:
        return [Change(f"{r.pool}:{r.address}:{r.owner_id}",
                       f"{self._where}/{r.pool}/{r.address or 'any free address'}", None,
                       {"address": r.address or "any free address",
                        "granted_to": _owner(r.description, r.owner_id)}) for r in requests]

    def _revoke_ips(self, grants: Any) -> list[Change]:
        return [Change(f"{g.pool}:{g.address}", f"{self._where}/{g.pool}/{g.address}",
                       {"address": g.address, "granted_to": _owner(g.description, g.owner_id)}, "free",
                       assumed=True) for g in grants]

    def _create_test_networks(self, specs: Any) -> list[Change]:
        return [Change(s.name, f"{self._where}/{s.name}", "absent", f"test network copying {s.copy_of}",
                       assumed=True) for s in specs]

    def _delete_test_networks(self, names: Any) -> list[Change]:
        return [Change(n, f"{self._where}/{n}", "test network", "absent", assumed=True) for n in names]

    def _connect_nics(self, conns: Any) -> list[Change]:
        return [Change(c.key, f"{self._where}/{c.vm}/{c.nic}",
                       _nic_state(self._audit.nic(self._where, c.vm, c.nic)),
                       _connection(c.vm_network, c.vm_subnet, [f"{a}/{p}" for a, p in c.addresses]))
                for c in conns]

    def _set_failover_configs(self, host: str, configs: Any) -> list[Change]:
        out = []
        for c in configs:
            seen = self._audit.recall(("failover", self._where, host, c.vm, c.nic))
            out.append(Change(f"{host}:{c.vm}/{c.nic}", f"{self._where}/{host}/{c.vm}/{c.nic}",
                              None if seen is None else (_settings(seen) or "none"), _settings(c.settings)))
        return out

    def _clear_failover_configs(self, host: str, nics: Any) -> list[Change]:
        out = []
        for vm, nic in nics:
            seen = self._audit.recall(("failover", self._where, host, vm, nic))
            out.append(Change(f"{host}:{vm}/{nic}", f"{self._where}/{host}/{vm}/{nic}",
                              None if seen is None else (_settings(seen) or "none"), "none"))
        return out

    def _replicate(self, host: str, action: str, vms: Any, points: Any = None) -> list[Change]:
        # A relationship is one for both hosts: what an earlier step (prepare, on the other
        # host) left is what this one finds, when the step read nothing itself.
        seen_of = {vm: self._audit.recall(("replica", self._where, host, vm)) for vm in vms}
        unseen = {vm for vm, seen in seen_of.items() if seen is None}
        earlier = {t.rsplit("/", 1)[-1]: v for t, v in self._audit.made_earlier("hyperv.replicate.", unseen).items()
                   } if unseen else {}
        out = []
        for vm in vms:
            seen = seen_of[vm]
            wanted = f"{action} to recovery point {points[vm]}" if points and vm in points else action
            out.append(Change(f"{host}:{vm}", f"{self._where}/{host}/{vm}",
                              _replica(seen) if seen is not None else earlier.get(vm), wanted,
                              assumed=seen is None))
        return out

    def _set_power(self, host: str, action: str, vms: Any) -> list[Change]:
        return [Change(f"{host}:{vm}", f"{self._where}/{host}/{vm}", None, _POWER_TO.get(action, action))
                for vm in vms]

    def _apply(self, zone: str, changes: Any) -> list[Change]:
        out = []
        for ch in changes:
            seen = self._audit.recall(("dns", self._where, zone, ch.name, ch.type.value))
            out.append(Change(f"{zone}:{ch.name}:{ch.type.value}", f"{self._where}/{ch.name}/{ch.type.value}",
                              {"values": list(ch.expected) or "absent", "ttl": seen.ttl if seen else None},
                              {"values": list(ch.new_values) or "absent", "ttl": ch.ttl if ch.new_values else None}))
        return out

    def _announce(self, routes: Any) -> list[Change]:
        return self._routes(routes, adding=True)

    def _withdraw(self, routes: Any) -> list[Change]:
        return self._routes(routes, adding=False)

    def _routes(self, routes: Any, *, adding: bool) -> list[Change]:
        out = []
        for r in routes:
            seen = self._audit.recall(("routes", r.router, r.prefix))
            held = None if seen is None else [_route(x) for x in seen]
            if held is None:
                before, after = ("absent" if adding else [_route(r)]), ([_route(r)] if adding else "absent")
            else:
                rest = [x for x in held if x != _route(r)]
                before = held or "absent"
                after = [*rest, _route(r)] if adding else (rest or "absent")
            out.append(Change(f"{r.router}:{r.prefix}:{_route(r)}", f"{r.router}/{r.prefix}", before, after,
                              assumed=held is None))
        return out

    def _run_script(self, host: str, path: str, parameters: dict[str, Any], timeout_s: float) -> list[Change]:
        return [Change(f"{host}:{path}", f"{host}:{path}", {"parameters": secret_parameters(parameters)}, None)]


def audited_ports(ports: Ports, audit: StepAudit) -> Ports:
    """``ports`` as one step sees them: every changing call audited (see the module)."""

    def wrap(port: P, kind: str, where: str, protocol: type) -> P:
        # Same interface: every attribute is the port's own; changing calls are recorded.
        return cast(P, _Audited(port, kind, where, protocol, audit))

    return Ports(
        vmm={k: wrap(v, "vmm", k, Vmm) for k, v in ports.vmm.items()},
        hyperv={k: wrap(v, "hyperv", k, HyperV) for k, v in ports.hyperv.items()},
        dns={k: wrap(v, "dns", k, Dns) for k, v in ports.dns.items()},
        routes=wrap(ports.routes, "routes", "", Routes),
        scripts=wrap(ports.scripts, "script", "", Scripts),
    )
