"""``SimWorld``: the simulated sites, shared by every process that opens the same state file.

One world holds every site of the inventory; the port objects it hands out
(:meth:`SimWorld.vmm`, :meth:`~SimWorld.hyperv`, :meth:`~SimWorld.dns`, :meth:`~SimWorld.routes`)
are thin views that run each call through :meth:`SimWorld._batch` / :meth:`SimWorld._single`:
latency, fault injection, the cross-process lock, persistence and the call record live there,
once, so the four drivers contain only the rules of the systems they imitate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TC

if _TC:
    from agent.drivers.sim.scripts import SimScripts

import fnmatch
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from agent.drivers.sim.changes import Tracked
from agent.drivers.sim.dns import SimDns
from agent.drivers.sim.errors import InjectedFault
from agent.drivers.sim.faults import FaultRule, Firing, Latency, LatencyModel, any_rule_for, decide, fault_entry
from agent.drivers.sim.hyperv import SimHyperV
from agent.drivers.sim.inventory import SimInventory, load_inventory
from agent.drivers.sim.routes import SimRoutes
from agent.drivers.sim.specs import RecoveryPointSpec
from agent.drivers.sim.state import State, point_dict, seed, snapshot
from agent.drivers.sim.store import StateStore
from agent.drivers.sim.vmm import SimVmm
from agent.errors import AgentError, NotFoundError, TimeoutError_, UnreachableError
from agent.ports import ItemResult

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One port call as the simulator saw it (a line of ``<state>.calls.jsonl``)."""

    kind: str
    """``<port>.<method>``, e.g. ``vmm.grant_ips``; Hyper-V calls add the action
    (``hyperv.replicate.failover``, ``hyperv.set_power.start``)."""
    target: str
    """The site (VMM), host (Hyper-V), server (DNS) or router the call went to."""
    items: tuple[str, ...]
    """The key of each item, in call order."""
    changed: tuple[str, ...]
    """Keys of the items that changed state."""
    errors: Mapping[str, str] = field(default_factory=dict)
    """Item key -> error code, for the items that failed."""
    error: str | None = None
    """Code of the error the whole call raised (``timeout`` with changes: the ambiguous case)."""
    seq: int | None = None
    """The state version this call produced; None when it changed nothing."""
    pid: int = 0
    started: float = 0.0
    duration: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CallRecord:
        return cls(
            kind=d["kind"],
            target=d["target"],
            items=tuple(d["items"]),
            changed=tuple(d["changed"]),
            errors=dict(d.get("errors", {})),
            error=d.get("error"),
            seq=d.get("seq"),
            pid=d.get("pid", 0),
            started=d.get("started", 0.0),
            duration=d.get("duration", 0.0),
        )


class SimWorld:
    """The simulated sites: VMM servers, Hyper-V hosts, DNS servers and routers of an inventory,
    persisted in a state file that every process opening it shares.

    Every port call is recorded (:meth:`calls`), may be slowed down (:meth:`set_latency`) and
    may be made to fail (:meth:`inject`); latency and faults are off unless the inventory's
    ``simulation:`` section or these methods turn them on.
    """

    def __init__(self, inventory: Path | SimInventory, store: StateStore) -> None:
        self._inventory_source = inventory
        self._store = store
        self._cache: dict[Any, tuple[Any, Any]] = {}

    # ----------------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, inventory: Path | str | SimInventory, state: Path | str) -> SimWorld:
        """The world kept in ``state``; seeded from ``inventory`` when that file does not exist
        yet (the inventory is not even read otherwise: the state file is the truth after the
        first open). ``inventory`` may be a path to the YAML or an already-built inventory.

        Raises ``InvalidFileError`` (every problem located by line) for a bad inventory and
        ``StateFileError`` for a state file that is not a simulator state of this format.
        """

        source = inventory if isinstance(inventory, SimInventory) else Path(inventory)
        world = cls(source, StateStore(Path(state)))
        store = world._store
        if not store.exists():
            inv = world.inventory()
            with store.locked():
                if not store.exists():  # another process may have seeded it while we waited
                    store.remove_stale_temp_files()
                    store.replace_all(world._seed_state(inv), _internal("sim.seed"))
        elif store.has_stale_temp_files():
            with store.locked():  # no writer is mid-write while we hold the lock
                store.remove_stale_temp_files()
        with store.mutex:
            store.current()
        return world

    def reset(self) -> None:
        """Re-seed the world from the inventory (read again) and clear the call log."""

        inv = self.inventory()
        fresh = self._seed_state(inv)
        with self._store.locked():
            self._store.remove_stale_temp_files()
            if self._store.exists():
                self._store.current()  # continue the version sequence
            self._store.truncate_log()
            self._store.replace_all(fresh, _internal("sim.reset"))
        self._cache.clear()

    def inventory(self) -> SimInventory:
        """The inventory the world was (or will be) seeded from, read now."""

        if isinstance(self._inventory_source, SimInventory):
            return self._inventory_source
        return load_inventory(self._inventory_source)

    def _seed_state(self, inv: SimInventory) -> State:
        st = seed(inv)
        st["inventory_sha256"] = (
            hashlib.sha256(self._inventory_source.read_bytes()).hexdigest()
            if isinstance(self._inventory_source, Path)
            else None
        )
        return st

    @property
    def inventory_changed(self) -> bool:
        """True when the inventory file differs from the one the state was seeded from
        (:meth:`reset` applies it)."""

        if not isinstance(self._inventory_source, Path):
            return False
        digest = hashlib.sha256(self._inventory_source.read_bytes()).hexdigest()
        with self._store.mutex:
            return self._store.current().get("inventory_sha256") != digest

    @property
    def state_path(self) -> Path:
        return self._store.path

    @property
    def calls_path(self) -> Path:
        return self._store.calls_path

    # ------------------------------------------------------------------------- ports

    def vmm(self, site: str) -> SimVmm:
        """The VMM server of ``site`` (a :class:`agent.ports.Vmm`)."""

        self._require("sites", site, "site")
        return SimVmm(self, site)

    def hyperv(self, site: str) -> SimHyperV:
        """The Hyper-V hosts of ``site`` (a :class:`agent.ports.HyperV`)."""

        self._require("sites", site, "site")
        return SimHyperV(self, site)

    def dns(self, server: str) -> SimDns:
        """The DNS server named ``server`` in the inventory (a :class:`agent.ports.Dns`)."""

        self._require("dns", server, "server")
        return SimDns(self, server)

    def scripts(self) -> SimScripts:
        from agent.drivers.sim.scripts import SimScripts

        return SimScripts(self)

    def routes(self) -> SimRoutes:
        """Every router of the inventory (a :class:`agent.ports.Routes`)."""

        return SimRoutes(self)

    def _require(self, section: str, name: str, what: str) -> None:
        with self._store.mutex:
            known = self._store.current()[section]
        if name not in known:
            raise NotFoundError(
                f"the simulated world has no {what} {name!r} (known: {', '.join(sorted(known)) or 'none'})",
                **{what: name},
            )

    @property
    def sites(self) -> list[str]:
        with self._store.mutex:
            return sorted(self._store.current()["sites"])

    # ---------------------------------------------------------------- observation

    def snapshot(self) -> dict[str, Any]:
        """A canonical dump of all modelled state (networks, pools, grants, VMs, replications,
        failover configs, DNS records, routes): equal dumps mean equal worlds. Simulation
        settings, counters and the call log are not part of it."""

        with self._store.mutex:
            return snapshot(self._store.current())

    def calls(self, kind: str | None = None) -> list[CallRecord]:
        """Port calls made on this world by any process, oldest first; ``kind`` filters by call
        kind or glob (``"vmm.*"``). Every persisted change appears exactly once, even when a
        process was killed in the middle of a call."""

        out = []
        for d in self._store.read_log():
            k = d["kind"]
            if k.startswith("sim."):
                continue
            if kind is None or fnmatch.fnmatchcase(k, kind):
                out.append(CallRecord.from_dict(d))
        return out

    # ------------------------------------------------------------ latency and faults

    def set_latency(self, call: str = "*", *, fixed: float = 0.0, per_item: float = 0.0) -> None:
        """Make calls of kind ``call`` (a glob) take ``fixed + per_item * items`` seconds."""

        spec = Latency(fixed=fixed, per_item=per_item)

        def change(st: State) -> None:
            st["sim"]["latency"]["calls"][call] = spec.model_dump()

        self._configure("sim.set_latency", change)

    def set_latency_scale(self, scale: float) -> None:
        """Multiply every latency by ``scale`` (0 turns latency off, keeping the settings)."""

        LatencyModel(scale=scale)  # validates

        def change(st: State) -> None:
            st["sim"]["latency"]["scale"] = scale

        self._configure("sim.set_latency", change)

    def clear_latency(self) -> None:
        def change(st: State) -> None:
            st["sim"]["latency"] = LatencyModel().model_dump()

        self._configure("sim.set_latency", change)

    def inject(self, rule: FaultRule | Mapping[str, Any]) -> int:
        """Add a fault rule (see :class:`FaultRule`); returns its index."""

        rule = rule if isinstance(rule, FaultRule) else FaultRule.model_validate(dict(rule))
        index: list[int] = []

        def change(st: State) -> None:
            st["sim"]["faults"].append(fault_entry(rule))
            index.append(len(st["sim"]["faults"]) - 1)

        self._configure("sim.inject", change)
        return index[0]

    def clear_faults(self) -> None:
        def change(st: State) -> None:
            st["sim"]["faults"] = []

        self._configure("sim.clear_faults", change)

    def faults(self) -> list[tuple[FaultRule, int, int]]:
        """Each fault rule with how many calls it has seen and how many times it fired."""

        with self._store.mutex:
            entries = self._store.current()["sim"]["faults"]
            return [(FaultRule.model_validate(e["rule"]), e["seen"], e["fired"]) for e in entries]

    def set_recovery_points(self, vm: str, points: Sequence[Mapping[str, Any]]) -> None:
        """Replace the recovery points ``vm``'s replica holds (``name``, ``created``,
        ``app_consistent``), as Hyper-V does when it takes new ones and prunes the oldest."""

        checked = [RecoveryPointSpec.model_validate(dict(p)) for p in points]

        def change(st: State) -> None:
            if vm not in st["replications"]:
                raise NotFoundError(f"the simulated world has no replication of {vm!r}", vm=vm)
            st["replications"][vm]["recovery_points"] = [point_dict(p) for p in checked]

        self._configure("sim.set_recovery_points", change)

    def _configure(self, kind: str, change: Callable[[State], None]) -> None:
        with self._mutating() as st:
            change(st)
            self._store.commit(cast(Tracked, st), _internal(kind))

    # ------------------------------------------------------------------ call runner

    def _cached(self, key: Any, build: Callable[[], R], depends: Sequence[tuple[str, ...]] | None = None) -> R:
        """A value derived from the state, rebuilt only when the state changed, or, with
        ``depends``, only when something under those containers (``("vms", site)``) changed. Call
        with the store's mutex held (the values are frozen or never mutated, so sharing them is safe)."""

        version = self._store.token if depends is None else tuple(self._store.version_of(p) for p in depends)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = build()
        self._cache[key] = (version, value)
        return value

    @contextmanager
    def _mutating(self) -> Iterator[State]:
        """The current state, under the cross-process lock, to change and commit; it notes what
        the call touches (:mod:`agent.drivers.sim.changes`), so the commit writes only that. A
        call that fails halfway may have mutated it already, so the cached copy is dropped and
        the next call reloads the last committed state."""

        with self._store.locked():
            st = self._store.begin()
            try:
                yield cast(State, st)
            except BaseException:
                self._store.invalidate()
                raise

    def _settle(self, st: State, line: dict[str, Any], persist: bool) -> None:
        """Ends a locked call: a new state version with its call record when it changed the
        world (or a fault rule's counters), else the call record alone."""

        if persist:
            self._store.commit(cast(Tracked, st), line)
        else:
            self._store.append_log(line)

    def _prelude(self, kind: str, items: int, mutating: bool) -> bool:
        """Sleeps the call's latency (outside any lock, so parallel calls overlap) and says
        whether the call must run under the cross-process lock."""

        with self._store.mutex:
            sim = self._store.current()["sim"]
            delay = LatencyModel.model_validate(sim["latency"]).delay(kind, items) if sim["latency"]["calls"] else 0.0
            needs_lock = mutating or any_rule_for(sim, kind)
        if delay > 0:
            time.sleep(delay)
        return needs_lock

    def _batch(
        self,
        kind: str,
        target: str,
        items: Sequence[T],
        key: Callable[[T], str],
        names: Callable[[T], Iterable[str]],
        apply: Callable[[State, T], ItemResult[Any]],
        *,
        precheck: Callable[[State], None] | None = None,
    ) -> list[ItemResult[Any]]:
        """Runs a mutating batch call under the cross-process lock: ``apply`` handles one item
        against the state and returns its result, or raises an :class:`AgentError` that becomes
        that item's error; it must check before it mutates. ``precheck`` may refuse the whole
        call (unknown host, malformed call)."""

        keys = [key(i) for i in items]
        t0, started = time.monotonic(), time.time()
        self._prelude(kind, len(items), mutating=True)
        item_names = [(key(i), *names(i)) for i in items]
        with self._mutating() as st:
            firings, dirty = decide(st["sim"], kind, target, item_names)
            error, blocked, late_error = _call_faults(firings, kind, target, len(items))
            results: list[ItemResult[Any]] = []
            if error is None:
                try:
                    if precheck is not None:
                        precheck(st)
                    for i, item in enumerate(items):
                        if i in blocked:
                            results.append(ItemResult(keys[i], error=blocked[i]))
                            continue
                        try:
                            results.append(apply(st, item))
                        except AgentError as exc:
                            results.append(ItemResult(keys[i], error=exc))
                except AgentError as exc:
                    error = exc
            error = error or late_error
            changed = [r.key for r in results if r.changed]
            line = _record(
                kind,
                target,
                [r.key for r in results] if results else keys,
                changed,
                {r.key: r.error.code for r in results if r.error is not None},
                error,
                started,
                t0,
            )
            self._settle(st, line, persist=dirty or bool(changed))
        if error is not None:
            raise error
        return results

    def _single(
        self,
        kind: str,
        target: str,
        names: Sequence[str],
        apply: Callable[[State], tuple[R, Sequence[str]]],
        *,
        mutating: bool,
        items: int = 1,
        keys: Sequence[str] = (),
    ) -> R:
        """Runs a call that succeeds or raises as a whole (reads, an atomic DNS update).
        ``apply`` returns the value and the keys of what it changed; ``names`` are what fault
        rules' targets match; an injected permanent fault raises for the whole call."""

        t0, started = time.monotonic(), time.time()
        locked = self._prelude(kind, items, mutating)

        def record(changed: Sequence[str], error: AgentError | None) -> dict[str, Any]:
            return _record(kind, target, list(keys), list(changed), {}, error, started, t0)

        if not locked:
            with self._store.mutex:
                try:
                    value, changed = apply(self._store.current())
                except AgentError as exc:
                    self._store.append_log(record((), exc))
                    raise
            self._store.append_log(record(changed, None))
            return value

        with self._mutating() as st:
            firings, dirty = decide(st["sim"], kind, target, [tuple(names)])
            error, blocked, late_error = _call_faults(firings, kind, target, 1)
            error = error or blocked.get(0)
            outcome: tuple[R, Sequence[str]] | None = None
            if error is None:
                try:
                    outcome = apply(st)
                except AgentError as exc:
                    error = exc
            error = error or late_error
            changed = outcome[1] if outcome is not None else ()
            self._settle(st, record(changed, error), persist=dirty or bool(changed))
        if error is not None:
            raise error
        assert outcome is not None  # no error: apply ran and returned
        return outcome[0]


def _call_faults(
    firings: list[Firing], kind: str, target: str, n_items: int
) -> tuple[AgentError | None, dict[int, AgentError], AgentError | None]:
    """What the fired rules do: an error that stops the call before it acts, the items failed
    by permanent faults, and an error raised after the call acted (timeout, applied)."""

    before: AgentError | None = None
    late: AgentError | None = None
    blocked: dict[int, AgentError] = {}
    for f in firings:
        if f.rule.fault == "transient" and before is None:
            before = UnreachableError(
                f"{kind} on {target}: unreachable (injected by fault rule {f.index})", rule=f.index
            )
        elif f.rule.fault == "timeout":
            err = TimeoutError_(
                f"{kind} on {target}: no answer in time (injected by fault rule {f.index}; "
                f"{'the call took effect' if f.rule.applied else 'nothing was done'})",
                rule=f.index,
            )
            if f.rule.applied:
                late = late or err
            elif before is None:
                before = err
        elif f.rule.fault == "permanent":
            refused = f"{kind} on {target}: refused (injected by fault rule {f.index})"
            for i in range(n_items) if f.items is None else sorted(f.items):
                blocked.setdefault(i, InjectedFault(refused, rule=f.index))
    return before, blocked, late


def _record(
    kind: str,
    target: str,
    items: list[str],
    changed: list[str],
    errors: dict[str, str],
    error: AgentError | None,
    started: float,
    t0: float,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "target": target,
        "items": items,
        "changed": changed,
        "errors": errors,
        "error": error.code if error is not None else None,
        "pid": os.getpid(),
        "started": round(started, 6),
        "duration": round(time.monotonic() - t0, 6),
    }


def _internal(kind: str) -> dict[str, Any]:
    return _record(kind, "", [], [], {}, None, time.time(), time.monotonic())
