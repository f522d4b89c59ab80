"""The journal's bookkeeping of outside changes: snapshots of what was there before the agent
first changed it, what the agent wrote over them, the DNS record sets it manages, and audit
records a step adds beside its ports' own.

* **Snapshots before the change.** A snapshot is committed before the call that changes what
  it guards; first write wins within a scope, so a resumed or repeated step never overwrites
  the original with the agent's own work.
* **Marks after.** ``written`` (and the managed records, and the step's own audit rows) are
  committed after the call, all of one step in one transaction.
* **In bulk.** Each is one transaction per step, whatever the number of items, with bulk
  statements; nothing just written is read back: the caller already holds it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from agent.engine.store import AuditRow, JsonText, ManagedRecordRow, SnapshotRow, Store

_SNAPSHOTS: Table = SnapshotRow.__table__  # type: ignore[assignment]
_BY_KEY = (update(_SNAPSHOTS)
           .where(_SNAPSHOTS.c.scope == bindparam("b_scope"), _SNAPSHOTS.c.kind == bindparam("b_kind"),
                  _SNAPSHOTS.c.key == bindparam("b_key"))
           .values(written=bindparam("b_written", type_=JsonText())))
"""Sets ``written`` of one snapshot by its (unique) scope, kind and key: run for many at once."""


def chunks(values: list, size: int = 500) -> Iterable[list]:
    """Slices small enough for any database's limit on bound parameters in one IN list."""
    for i in range(0, len(values), size):
        yield values[i:i + size]


class Bookkeeping:
    """Part of :class:`agent.engine.journal.Journal` (see the module)."""

    store: Store

    # ------------------------------------------------------------------- snapshots

    def snapshot(self, *, scope: str, kind: str, key: str, data: Any) -> bool:
        """Store what was there before the first change. First write wins: returns False (and
        keeps the original) if a snapshot of that key already exists in the scope."""
        with self.store.session() as s:
            exists = s.scalar(select(func.count()).select_from(SnapshotRow).where(
                SnapshotRow.scope == scope, SnapshotRow.kind == kind, SnapshotRow.key == key))
            if exists:
                return False
            s.add(SnapshotRow(scope=scope, kind=kind, key=key, data=data))
            return True

    def snapshot_many(self, *, scope: str, kind: str, data: dict[str, Any]) -> set[str]:
        """:meth:`snapshot` for many keys in one transaction: first write wins per key. Returns
        the keys stored now (those not already snapshotted in the scope)."""
        with self.store.session() as s:
            return set(self._snapshot_in(s, scope, kind, data, ())[0])

    def snapshot_originals(self, *, scope: str, kind: str, data: dict[str, Any],
                           wanted: Collection[str]) -> dict[str, Any]:
        """:meth:`snapshot_many`, returning in the same transaction the original of each key in
        ``wanted``: the snapshot stored before (first write wins), else the one stored now.
        Only the ``wanted`` earlier snapshots are read; the new ones are the caller's own data."""
        with self.store.session() as s:
            new, earlier = self._snapshot_in(s, scope, kind, data, wanted)
        return {k: earlier[k] if k in earlier else data[k] for k in wanted if k in data}

    @staticmethod
    def _snapshot_in(s: Session, scope: str, kind: str, data: dict[str, Any],
                     wanted: Collection[str]) -> tuple[list[str], dict[str, Any]]:
        existing: set[str] = set()
        for chunk in chunks(list(data)):
            existing.update(s.scalars(select(SnapshotRow.key).where(
                SnapshotRow.scope == scope, SnapshotRow.kind == kind, SnapshotRow.key.in_(chunk))))
        new = [k for k in data if k not in existing]
        if new:
            s.execute(insert(SnapshotRow), [{"scope": scope, "kind": kind, "key": k, "data": data[k]} for k in new])
        earlier: dict[str, Any] = {}
        for chunk in chunks(sorted(existing.intersection(wanted))):
            earlier.update((k, d) for k, d in s.execute(select(SnapshotRow.key, SnapshotRow.data).where(
                SnapshotRow.scope == scope, SnapshotRow.kind == kind, SnapshotRow.key.in_(chunk))))
        return new, earlier

    def set_written_many(self, *, scope: str, kind: str, written: dict[str, Any]) -> None:
        """:meth:`set_written` for many keys in one transaction."""
        self.mark_written(scope=scope, kind=kind, written=written)

    def mark_written(self, *, scope: str, kind: str, written: dict[str, Any],
                     managed: Iterable[tuple[str, str, str]] = (), reason: str = "written",
                     audit: tuple[str, str, Iterable[tuple[str | None, Any]]] | None = None) -> None:
        """After a step's change, in one transaction: what it wrote over each snapshot
        (``written``: key -> value; a key without a snapshot is left alone), the DNS record sets
        it now manages (``managed``: zone, name, type, for ``reason``), and audit records of its
        own (``audit``: actor, action and (target, details) of each, for operation ``scope``)."""
        rows = [{"b_scope": scope, "b_kind": kind, "b_key": k, "b_written": v} for k, v in written.items()]
        wanted = list(dict.fromkeys(managed))
        entries = [] if audit is None else [
            {"actor": audit[0], "action": audit[1], "target": target, "operation_id": scope, "details": details}
            for target, details in audit[2]]
        if not rows and not wanted and not entries:
            return
        with self.store.session() as s:
            if rows:
                s.connection().execute(_BY_KEY, rows)
            if wanted:
                self._manage_in(s, wanted, reason)
            if entries:
                s.execute(insert(AuditRow), entries)

    def set_written(self, *, scope: str, kind: str, key: str, written: Any) -> None:
        self.mark_written(scope=scope, kind=kind, written={key: written})

    def snapshots(self, *, scope: str, kind: str | None = None,
                  keys: Iterable[str] | None = None) -> list[SnapshotRow]:
        with self.store.session() as s:
            q = select(SnapshotRow).where(SnapshotRow.scope == scope).order_by(SnapshotRow.id)
            if kind is not None:
                q = q.where(SnapshotRow.kind == kind)
            if keys is not None:
                q = q.where(SnapshotRow.key.in_(list(keys)))
            return list(s.scalars(q))

    # ------------------------------------------------------------- managed records

    def manage_record(self, zone: str, name: str, rtype: str, reason: str) -> None:
        self.manage_records([(zone, name, rtype)], reason)

    def manage_records(self, records: Iterable[tuple[str, str, str]], reason: str) -> None:
        """:meth:`manage_record` for many (zone, name, type) in one transaction."""
        wanted = list(dict.fromkeys(records))
        if not wanted:
            return
        with self.store.session() as s:
            self._manage_in(s, wanted, reason)

    @staticmethod
    def _manage_in(s: Session, wanted: list[tuple[str, str, str]], reason: str) -> None:
        have: set[tuple[str, str, str]] = set()
        zones = sorted({z for z, _, _ in wanted})
        for chunk in chunks(sorted({n for _, n, _ in wanted})):
            have.update((r.zone, r.name, r.type) for r in s.execute(select(
                ManagedRecordRow.zone, ManagedRecordRow.name, ManagedRecordRow.type).where(
                ManagedRecordRow.zone.in_(zones), ManagedRecordRow.name.in_(chunk))))
        new = [{"zone": z, "name": n, "type": t, "reason": reason} for z, n, t in wanted if (z, n, t) not in have]
        if new:
            s.execute(insert(ManagedRecordRow), new)

    def audit_many(self, *, actor: str, action: str, operation_id: str | None,
                   entries: Iterable[tuple[str | None, Any]]) -> None:
        """Audit records (target, details) of one kind in one transaction, like ``Store.audit``."""
        rows = [{"actor": actor, "action": action, "target": target, "operation_id": operation_id, "details": details}
                for target, details in entries]
        if rows:
            with self.store.session() as s:
                s.execute(insert(AuditRow), rows)

    def managed_records(self) -> set[tuple[str, str, str]]:
        with self.store.session() as s:
            return {(r.zone, r.name, r.type) for r in s.scalars(select(ManagedRecordRow))}
