"""The journal: operations and their steps in the store, with DBOS-style semantics.

* Steps are keyed by (operation, ordinal, name) and fixed when the operation is created; a
  resumed operation whose step list no longer matches raises :class:`StepSequenceChanged`.
* Intent is committed before a step acts (status ``running``, attempt count) and its outcome
  after (per-item results). On resume a recorded outcome is replayed, never re-executed; a step
  found ``running`` was cut off mid-way and runs again -- safe, because every action is
  idempotent (reads state, acts only on drift).
* One active operation per VM (``vm_locks``); reservations are unique per address while held.
"""

from __future__ import annotations

import threading
import uuid
from collections import namedtuple
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, type_coerce, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer
from sqlalchemy.types import NullType

from agent.domain.errors import AddressAlreadyGranted
from agent.engine.bookkeeping import Bookkeeping, chunks
from agent.engine.model import (
    FINAL_STATUSES,
    ErrorPolicy,
    OperationKind,
    OperationView,
    OpStatus,
    StepResult,
    StepSpec,
    StepStatus,
    StepView,
    needed_ordinals,
)
from agent.engine.steps import SPEC_VERSION, upgrade
from agent.engine.store import (
    NoteRow,
    OperationRow,
    ReservationRow,
    SiteViewRow,
    StepRow,
    Store,
    VmLockRow,
    utcnow,
)
from agent.errors import ConflictError, NotFoundError, RefusedError


class VmBusy(ConflictError):
    code = "vm_busy"


class StepSequenceChanged(RefusedError):
    code = "step_sequence_changed"


PLAN_VMS_CACHED = 256
"""How many operations' plan VM names a journal keeps (a few KB each)."""


STEP_OUTCOMES_CACHED = 50_000
"""How many steps' outcome summaries a journal keeps for :meth:`Journal.view` (a few hundred bytes each)."""

_VIEW_COLUMNS = (StepRow.id, StepRow.ordinal, StepRow.name, StepRow.action, StepRow.group_name, StepRow.target,
                 StepRow.status, StepRow.attempts, StepRow.intent_at, StepRow.errors, StepRow.started_at,
                 StepRow.finished_at, func.length(StepRow.outcome).label("outcome_length"))


_STEP_KEY = tuple(type_coerce(c, NullType()).label(f"key_{c.key}") for c in (
    StepRow.status, StepRow.attempts, StepRow.intent_at, StepRow.started_at, StepRow.finished_at))
"""What moves whenever a step's row does (its outcome and errors are written with its status or
attempts), as the store returns it: covered by the index ``ix_steps_view``, so on SQLite reading
it does not walk the overflow pages of the spec stored before them."""

_ViewRow = namedtuple("_ViewRow", [str(c.key) for c in _VIEW_COLUMNS])  # type: ignore[misc]
"""A step as the view shows it: the view's columns without the outcome."""


def _signature(row: Any) -> tuple[Any, ...]:
    """What changes whenever a step's outcome is written: ``record_outcome`` follows a
    ``mark_intents`` (attempts, intent) and sets status and finish, ``complete_manual`` moves a
    waiting step on (status, finish); the outcome's length also catches a change by any other hand."""
    return row.status, row.attempts, row.intent_at, row.finished_at, row.outcome_length


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What the operation's view takes from a step's outcome. Outcomes are most of what a view
    would read (every item of a 1,000-VM operation, with its value); parsing them all on every
    view made each API poll of a running operation cost tens of milliseconds."""

    items: int
    changed: int
    failed_vms: tuple[str, ...]
    waiting: str | None

    @classmethod
    def of(cls, outcome: dict[str, Any] | None) -> _Outcome:
        outcome = outcome or {}
        items = outcome.get("items", [])
        return cls(items=len(items), changed=sum(1 for it in items if it.get("changed")),
                   failed_vms=tuple(it["vm"] for it in items if it.get("vm") and it.get("error")),
                   waiting=outcome.get("waiting"))


class Journal(Bookkeeping):
    def __init__(self, store: Store, actor: str = "agent") -> None:
        self.store = store
        self.actor = actor
        self._plan_vms: dict[str, tuple[str, ...]] = {}
        """Operation id -> the VMs of its plan, for :meth:`view`: a plan is written once, when its
        operation is created, and is the largest value in the journal (a 1,000-VM plan is over a
        megabyte of JSON); parsing it on every view made an API poll cost tens of milliseconds."""
        self._plan_vms_lock = threading.Lock()  # the API's threads share one journal
        self._steps: dict[int, tuple[tuple[Any, ...], Any, _Outcome]] = {}
        """Step id -> (its ``_STEP_KEY`` columns, its ``_VIEW_COLUMNS``, what the view takes from
        its outcome) as last read, for :meth:`view`."""

    # ------------------------------------------------------------------ operations

    def create_operation(
        self,
        *,
        kind: OperationKind,
        plan_name: str,
        plan: dict[str, Any] | None,
        mode: str,
        error_policy: ErrorPolicy,
        source_site: str,
        target_site: str,
        steps: Sequence[StepSpec],
        vms: Iterable[str],
        parent_id: str | None = None,
        requested_by: str = "cli",
        lock_vms: bool = True,
    ) -> str:
        """Record a new operation with all its steps, and lock its VMs -- atomically: if any VM
        is held by another unfinished operation, nothing is written and :class:`VmBusy` names it."""

        op_id = "op-" + uuid.uuid4().hex[:12]
        vms = list(dict.fromkeys(vms))  # in the plan's order, for the view (plan_vms)
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate step names in {kind}: {sorted(n for n in names if names.count(n) > 1)}")
        # Journalled needs make the runner schedule by them; without, it keeps the stage barrier.
        needs = needed_ordinals(steps) if SCHEDULE_BY_NEEDS else [None] * len(steps)
        with self.store.session() as s:
            s.add(OperationRow(
                id=op_id, kind=kind.value, plan_name=plan_name,
                plan_kind=(plan or {}).get("kind"), plan_checksum=(plan or {}).get("checksum"), plan=plan,
                vms=vms, mode=mode, error_policy=error_policy.value, status=OpStatus.PENDING.value,
                source_site=source_site, target_site=target_site, parent_id=parent_id,
                requested_by=requested_by,
            ))
            s.flush()
            if lock_vms:
                held = {r.vm: r.operation_id for r in s.scalars(select(VmLockRow).where(VmLockRow.vm.in_(vms)))}
                if held:
                    raise VmBusy(
                        "VMs are held by other unfinished operations: "
                        + ", ".join(f"{vm} ({op})" for vm, op in sorted(held.items())),
                        vms=sorted(held), operations=sorted(set(held.values())),
                    )
                s.add_all(VmLockRow(vm=vm, operation_id=op_id) for vm in sorted(vms))
            s.add_all(
                StepRow(operation_id=op_id, ordinal=i, name=st.name, group_name=st.group, action=st.action,
                        target=st.target, stage=st.stage, spec=st.args.model_dump(mode="json"),
                        spec_version=SPEC_VERSION, needs=needs[i])
                for i, st in enumerate(steps)
            )
            try:
                s.flush()
            except IntegrityError as exc:  # a concurrent creator took a VM between our read and write
                raise VmBusy("a VM of this operation was just taken by another operation") from exc
        self.store.audit(actor=requested_by, action=f"operation.create.{kind.value}", target=plan_name,
                         operation_id=op_id, details={"steps": len(steps)})
        return op_id

    def operation(self, op_id: str, *, plan: bool = True) -> OperationRow:
        """The operation's row; without its ``plan`` (not loaded: reading it raises) unless asked.
        The plan is the largest value in the journal and most readers never look at it."""
        with self.store.session() as s:
            row = (s.get(OperationRow, op_id) if plan else s.scalars(
                select(OperationRow).where(OperationRow.id == op_id).options(defer(OperationRow.plan),
                                                                             defer(OperationRow.vms))).one_or_none())
            if row is None:
                raise NotFoundError(f"no operation {op_id}", operation=op_id)
            return row

    def operations(self, *, status: Iterable[str] | None = None, limit: int = 100) -> list[OperationRow]:
        with self.store.session() as s:
            q = select(OperationRow).order_by(OperationRow.created_at.desc())
            if status is not None:
                q = q.where(OperationRow.status.in_(list(status)))
            return list(s.scalars(q.limit(limit)))

    def set_status(self, op_id: str, status: OpStatus, *, result: dict[str, Any] | None = None) -> None:
        with self.store.session() as s:
            values: dict[str, Any] = {"status": status.value, "updated_at": utcnow()}
            if result is not None:
                values["result"] = result
            if status in FINAL_STATUSES or status == OpStatus.FAILED:
                values["finished_at"] = utcnow()
            else:
                values["finished_at"] = None
            s.execute(update(OperationRow).where(OperationRow.id == op_id).values(**values))
            if status in FINAL_STATUSES:
                s.execute(delete(VmLockRow).where(VmLockRow.operation_id == op_id))
        self.store.audit(actor=self.actor, action=f"operation.{status.value}", operation_id=op_id)

    def release_vms(self, op_id: str) -> None:
        with self.store.session() as s:
            s.execute(delete(VmLockRow).where(VmLockRow.operation_id == op_id))

    def request_cancel(self, op_id: str, actor: str) -> None:
        self.operation(op_id)
        with self.store.session() as s:
            s.execute(update(OperationRow).where(OperationRow.id == op_id).values(cancel_requested=True))
        self.store.audit(actor=actor, action="operation.cancel_requested", operation_id=op_id)

    def cancel_requested(self, op_id: str) -> bool:
        with self.store.session() as s:
            return bool(s.scalar(select(OperationRow.cancel_requested).where(OperationRow.id == op_id)))

    def mark_interrupted(self) -> list[str]:
        """At start-up: operations left ``running`` by a stopped agent become ``interrupted``."""
        with self.store.session() as s:
            ids = list(s.scalars(select(OperationRow.id).where(OperationRow.status == OpStatus.RUNNING.value)))
            if ids:
                s.execute(update(OperationRow).where(OperationRow.id.in_(ids))
                          .values(status=OpStatus.INTERRUPTED.value, updated_at=utcnow()))
        for op_id in ids:
            self.store.audit(actor=self.actor, action="operation.interrupted", operation_id=op_id)
        return ids

    # ------------------------------------------------------------------------ steps

    def steps(self, op_id: str, *, lean: bool = False) -> list[StepRow]:
        """The operation's steps in order. ``lean``: what a runner schedules by, not the rest --
        rows (not in the store's session) without ``spec`` (:meth:`step_spec` reads it when the
        step is about to run), with ``stage`` wherever the schema version keeps it, and an
        ``outcome`` only for a step that succeeded or failed, holding only its items' VMs and
        errors (what a resumed run replays). A 10,000-VM operation's specs and outcomes are tens
        of megabytes: a runner holding them all while it runs was most of its memory."""
        if not lean:
            with self.store.session() as s:
                return list(s.scalars(select(StepRow).where(StepRow.operation_id == op_id)
                                      .order_by(StepRow.ordinal)))
        with self.store.session() as s:
            rows = s.execute(select(*_LEAN_COLUMNS).where(StepRow.operation_id == op_id)
                             .order_by(StepRow.ordinal)).all()
            # Schema version 1 kept the stage in the spec; done steps' outcomes only as summaries.
            stages = {r.id: _stage(r.spec, r.spec_version, r.ordinal) for r in _by_chunks(
                s, (StepRow.id, StepRow.ordinal, StepRow.spec, StepRow.spec_version),
                [r.id for r in rows if r.stage is None])}
            replayed = {r.id: _replayed(r.outcome) for r in _by_chunks(
                s, (StepRow.id, StepRow.outcome), [r.id for r in rows if r.status in _REPLAYED])}
        out = []
        for r in rows:
            values = r._asdict()
            values["stage"] = stages.get(r.id, r.stage)
            out.append(StepRow(**values, spec=None, outcome=replayed.get(r.id)))
        return out

    def step_spec(self, step_id: int) -> Any:
        """A step's journalled arguments (as stored: ``agent.engine.steps.parse_args`` reads them)."""
        with self.store.session() as s:
            return s.scalar(select(StepRow.spec).where(StepRow.id == step_id))

    def check_sequence(self, op_id: str, expected: Sequence[StepSpec], recorded_rows: Sequence[StepRow]) -> None:
        """Refuse to resume an operation whose journalled steps (name and action, in order) are
        not the ones this agent would create for it now: the agent version, the config's
        recovery plan, its mode or its DNS TTL policy changed since it was created, and running
        the journal as it stands could do what nobody reviewed."""
        recorded = [(r.name, r.action) for r in recorded_rows]
        wanted = [(s.name, s.action) for s in expected]
        if recorded == wanted:
            return
        at = next((i for i, (a, b) in enumerate(zip(recorded, wanted, strict=False)) if a != b),
                  min(len(recorded), len(wanted)))

        def shown(steps: list[tuple[str, str]]) -> str:
            return f"{steps[at][0]} ({steps[at][1]})" if at < len(steps) else "no step"

        raise StepSequenceChanged(
            f"operation {op_id} cannot be resumed: its journalled steps differ from the ones this agent "
            f"would create for it now (step {at + 1}: journalled {shown(recorded)}, now {shown(wanted)}). The "
            "agent version or the config (recovery plan, mode, DNS TTL policy) changed since it was created. "
            f"Resume it with the config and version it was created with, or cancel it (ops cancel {op_id})",
            operation=op_id, step=at + 1, journalled=shown(recorded), now=shown(wanted))

    def mark_intents(self, step_ids: Sequence[int]) -> None:
        """The intent of the steps that start together (running, one attempt more), in one transaction."""
        if not step_ids:
            return
        at = utcnow()
        with self.store.session() as s:
            s.execute(update(StepRow).where(StepRow.id.in_(list(step_ids))).values(
                status=StepStatus.RUNNING.value, attempts=StepRow.attempts + 1,
                intent_at=at, started_at=func.coalesce(StepRow.started_at, at)))

    def record_outcome(self, step_id: int, status: StepStatus, result: StepResult) -> None:
        with self.store.session() as s:
            s.execute(update(StepRow).where(StepRow.id == step_id).values(
                status=status.value, outcome=result.to_json(), errors=result.errors or None,
                finished_at=None if status == StepStatus.WAITING else utcnow()))

    def complete_manual(self, op_id: str, actor: str) -> bool:
        """An operator says the manual action is done: the waiting step succeeds."""
        with self.store.session() as s:
            row = s.scalars(select(StepRow).where(StepRow.operation_id == op_id,
                                                  StepRow.status == StepStatus.WAITING.value)).first()
            if row is None:
                return False
            row.status = StepStatus.SUCCEEDED.value
            row.finished_at = utcnow()
            row.outcome = dict(row.outcome or {}, resumed_by=actor)
        self.store.audit(actor=actor, action="operation.manual_step_done", operation_id=op_id)
        return True

    # ------------------------------------------------------------------------ notes

    def add_note(self, op_id: str, author: str, text: str) -> None:
        self.operation(op_id)
        with self.store.session() as s:
            s.add(NoteRow(operation_id=op_id, author=author, text=text))

    def notes(self, op_id: str) -> list[NoteRow]:
        with self.store.session() as s:
            return list(s.scalars(select(NoteRow).where(NoteRow.operation_id == op_id).order_by(NoteRow.id)))

    # ----------------------------------------------------------------- reservations

    def record_reservation(self, *, site: str, pool: str, address: str, owner_id: str, vm: str, nic: str,
                           ip_index: int, purpose: str, operation_id: str) -> None:
        """Idempotent: a held reservation of that address for that owner is left as it is."""
        with self.store.session() as s:
            existing = s.scalars(select(ReservationRow).where(
                ReservationRow.site == site, ReservationRow.pool == pool, ReservationRow.address == address,
                ReservationRow.held.is_(True))).first()
            if existing is not None:
                if existing.owner_id != owner_id:
                    raise AddressAlreadyGranted(
                        f"{address} in pool {pool} is already recorded for {existing.vm}/{existing.nic}",
                        pool=pool, address=address, vm=existing.vm)
                return
            s.add(ReservationRow(site=site, pool=pool, address=address, owner_id=owner_id, vm=vm, nic=nic,
                                 ip_index=ip_index, purpose=purpose, operation_id=operation_id))

    def record_reservations(self, entries: Sequence[dict[str, Any]]) -> list[AddressAlreadyGranted | None]:
        """:meth:`record_reservation` for many addresses in one transaction (a step's worth).
        ``entries`` hold its keyword arguments; returns, per entry, None (recorded now or already
        held by that owner) or the conflict that refused it -- the other entries are recorded."""
        out: list[AddressAlreadyGranted | None] = []
        if not entries:
            return out
        with self.store.session() as s:
            held: dict[tuple[str, str, str], dict[str, Any]] = {}
            sites = sorted({e["site"] for e in entries})
            for chunk in chunks(sorted({e["address"] for e in entries})):
                for row in s.execute(select(ReservationRow.site, ReservationRow.pool, ReservationRow.address,
                                            ReservationRow.owner_id, ReservationRow.vm, ReservationRow.nic).where(
                        ReservationRow.site.in_(sites), ReservationRow.address.in_(chunk),
                        ReservationRow.held.is_(True))):
                    held[(row.site, row.pool, row.address)] = row._asdict()
            new = []
            for e in entries:
                key = (e["site"], e["pool"], e["address"])
                existing = held.get(key)
                if existing is None:
                    held[key] = e
                    new.append(e)
                    out.append(None)
                elif existing["owner_id"] != e["owner_id"]:
                    out.append(AddressAlreadyGranted(
                        f"{e['address']} in pool {e['pool']} is already recorded for "
                        f"{existing['vm']}/{existing['nic']}",
                        pool=e["pool"], address=e["address"], vm=existing["vm"]))
                else:
                    out.append(None)
            if new:
                s.execute(insert(ReservationRow), new)
        return out

    def release_reservation(self, *, site: str, pool: str, address: str) -> None:
        with self.store.session() as s:
            for row in s.scalars(select(ReservationRow).where(
                    ReservationRow.site == site, ReservationRow.pool == pool, ReservationRow.address == address,
                    ReservationRow.held.is_(True))):
                row.held = False
                row.held_key = row.id
                row.released_at = utcnow()

    def reservations(self, *, operation_id: str | None = None, purpose: str | None = None,
                     held: bool | None = True, vms: Iterable[str] | None = None) -> list[ReservationRow]:
        with self.store.session() as s:
            q = select(ReservationRow).order_by(ReservationRow.id)
            if operation_id is not None:
                q = q.where(ReservationRow.operation_id == operation_id)
            if purpose is not None:
                q = q.where(ReservationRow.purpose == purpose)
            if held is not None:
                q = q.where(ReservationRow.held.is_(held))
            if vms is not None:
                q = q.where(ReservationRow.vm.in_(list(vms)))
            return list(s.scalars(q))

    # ------------------------------------------------------------------ site views

    def save_site_view(self, site: str, part: str, data: Any) -> None:
        # Two processes reading a site at once both find no row and both insert: the one that
        # loses the race updates the row the other wrote (its own read is as fresh).
        for last in (False, True):
            try:
                with self.store.session() as s:
                    row = s.get(SiteViewRow, (site, part))
                    if row is None:
                        s.add(SiteViewRow(site=site, part=part, data=data, read_at=utcnow()))
                    else:
                        row.data, row.read_at = data, utcnow()
                return
            except IntegrityError:
                if last:
                    raise

    def load_site_view(self, site: str, part: str) -> tuple[Any, str] | None:
        with self.store.session() as s:
            row = s.get(SiteViewRow, (site, part))
            return None if row is None else (row.data, row.read_at.isoformat(timespec="seconds"))

    # ------------------------------------------------------------------------- view

    def view(self, op_id: str) -> OperationView:
        with self.store.session() as s:
            op = s.scalars(select(OperationRow).where(OperationRow.id == op_id)
                           .options(defer(OperationRow.plan), defer(OperationRow.vms))).one_or_none()
            if op is None:
                raise NotFoundError(f"no operation {op_id}", operation=op_id)
            OpStatus(op.status)  # a damaged status raises, for storecheck to name, never shown as one
            # Each step's changing columns first, untyped (converting 290 rows' datetimes and JSON
            # on every view cost more than the rest of it); only the steps whose columns moved since
            # this journal last read them are read in full, typed, and their outcome only if its
            # signature moved too (see _Outcome). Columns, not StepRow objects, and not the specs.
            keys = s.execute(select(StepRow.id, *_STEP_KEY).where(StepRow.operation_id == op_id)
                             .order_by(StepRow.ordinal)).all()
            kept = {k.id: self._steps.get(k.id) for k in keys}
            moved = [k.id for k in keys if (was := kept[k.id]) is None or was[0] != tuple(k[1:])]
            # Each re-read takes the key again with the row: a step that moved between two reads is
            # kept under the key of what was read, so the next view reads it again, never an old one.
            width = len(_VIEW_COLUMNS)
            read: dict[int, tuple[tuple[Any, ...], Any, _Outcome | None]] = {}
            for got in _by_chunks(s, (*_VIEW_COLUMNS, *_STEP_KEY), moved):
                row, was = _ViewRow(*got[:width]), kept[got.id]
                same = was is not None and _signature(was[1]) == _signature(row)
                read[got.id] = (tuple(got[width:]), row, was[2] if was is not None and same else None)
            # A few outcomes at a time, each kept only as its summary: all of a 10,000-VM
            # operation's outcomes at once are tens of megabytes decoded.
            for got in _by_chunks(s, (*_VIEW_COLUMNS, *_STEP_KEY, StepRow.outcome),
                                  [i for i, r in read.items() if r[2] is None]):
                read[got.id] = (tuple(got[width:-1]), _ViewRow(*got[:width]), _Outcome.of(got.outcome))
            # In this session too: each session is a transaction, ended by the lease's fence query.
            notes = [{"author": n.author, "text": n.text, "at": n.created_at.isoformat()}
                     for n in s.scalars(select(NoteRow).where(NoteRow.operation_id == op_id).order_by(NoteRow.id))]
        # Every step read has its outcome by now (the filter says so to the type checker).
        done = {i: (key, row, outcome) for i, (key, row, outcome) in read.items() if outcome is not None}
        if len(self._steps) + len(done) > STEP_OUTCOMES_CACHED:
            self._steps.clear()
        self._steps.update(done)
        # Kept: its key did not move. Neither: the step was deleted between the two reads, so is gone.
        entries = [e for k in keys if (e := done.get(k.id) or kept[k.id]) is not None]
        steps = []
        failed: set[str] = set()
        waiting = None
        for _key, r, summary in entries:
            failed.update(summary.failed_vms)
            if r.status == StepStatus.WAITING.value:
                waiting = summary.waiting
            steps.append(StepView(
                ordinal=r.ordinal, name=r.name, action=r.action, group=r.group_name, target=r.target,
                status=r.status, attempts=r.attempts, items=summary.items, changed=summary.changed,
                errors=r.errors or [], started_at=r.started_at, finished_at=r.finished_at))
        result = op.result or {}
        failed_vms = sorted(set(result.get("failed_vms", [])) | failed)
        succeeded = [vm for vm in self.plan_vms(op_id) if vm not in failed_vms] if op.status in (
            OpStatus.SUCCEEDED.value, OpStatus.PARTIAL.value) else []
        return OperationView(
            id=op.id, kind=op.kind, plan=op.plan_name, status=op.status, mode=op.mode,
            error_policy=op.error_policy, source_site=op.source_site, target_site=op.target_site,
            created_at=op.created_at, finished_at=op.finished_at, steps=steps, failed_vms=failed_vms,
            succeeded_vms=succeeded, waiting_for=waiting,
            notes=notes, parent_id=op.parent_id,
        )

    def plan_vms(self, op_id: str) -> tuple[str, ...]:
        """The names of the VMs in ``op_id``'s plan, in the plan's order."""
        with self._plan_vms_lock:
            cached = self._plan_vms.get(op_id)
        if cached is not None:
            return cached
        with self.store.session() as s:
            listed = s.scalar(select(OperationRow.vms).where(OperationRow.id == op_id))
            if listed is None:  # created before migration 0008: only its plan names them
                plan = s.scalar(select(OperationRow.plan).where(OperationRow.id == op_id))
                listed = [v["name"] for v in (plan or {}).get("vms", [])]
        names = tuple(listed)
        with self._plan_vms_lock:
            if len(self._plan_vms) >= PLAN_VMS_CACHED:
                self._plan_vms.pop(next(iter(self._plan_vms)))  # the oldest: dicts keep insertion order
            self._plan_vms[op_id] = names
        return names


_LEAN_COLUMNS = (StepRow.id, StepRow.operation_id, StepRow.ordinal, StepRow.name, StepRow.group_name, StepRow.action,
                 StepRow.target, StepRow.stage, StepRow.spec_version, StepRow.status, StepRow.attempts,
                 StepRow.intent_at, StepRow.errors, StepRow.started_at, StepRow.finished_at, StepRow.needs)
_REPLAYED = (StepStatus.SUCCEEDED.value, StepStatus.FAILED.value)


def _by_chunks(s: Any, columns: tuple[Any, ...], ids: list[int], size: int = 50) -> Iterable[Any]:
    """Rows of ``columns`` of the steps ``ids``, a few at a time: each holds a spec or an outcome,
    and only one chunk of those is decoded at once."""
    for chunk in chunks(ids, size):
        yield from s.execute(select(*columns).where(StepRow.id.in_(chunk))).all()


def _stage(spec: Any, version: int, ordinal: int) -> int:
    stage, _ = upgrade(spec, version)
    return int(stage if stage is not None else ordinal)


def _replayed(outcome: dict[str, Any] | None) -> dict[str, Any]:
    """What a resumed run takes from a done step's outcome: which items of which VMs failed."""
    return {"items": [{"key": it.get("key"), "vm": it["vm"], **({"error": it["error"]} if it.get("error") else {})}
                      for it in (outcome or {}).get("items", []) if it.get("vm")]}


SCHEDULE_BY_NEEDS = False
"""Off until a takeover bug is fixed: a standby that took over a planned failover whose
lookahead steps (the next groups' reservations and NIC connections) were in flight in the paused
leader finished it with web01's replica NIC on DHCP instead of its static failover address
(tests/integration/test_lease_processes.py, the paused-leader test, fails with this on). The
dependency-driven runner and the steps' declared needs stay built and tested
(tests/integration/test_engine_dependencies.py turns this on); operations journal no needs, so
they run stage by stage as before."""


def now() -> datetime:
    return utcnow()
