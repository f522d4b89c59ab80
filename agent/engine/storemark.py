"""Telling a store that went missing from a first start.

Opening a SQLite store that is not there creates an empty one. On a first start that is right;
for an agent whose store was deleted, moved or left on a disk that is no longer mounted it is
not: the empty store knows no operation, no reservation and no snapshot, and the agent would go
on as if it never did anything -- resuming nothing, undoing nothing.

So the first open of a store records its identity *outside* it, in ``stores.json`` in the
agent's data directory: the store's location, a store id and when it was created (the same id is
written in the store's own audit trail, ``store.created``). The marker lives beside the state
the agent keeps for the config (simulator state, logs), not beside the config file, which is
often read-only or managed elsewhere; and not inside the store, which is what goes missing.

Later opens compare: a store missing (no file, or an empty one) where the marker says there was
one is refused (:class:`StoreMissing`) unless the operator asks for a new one (``--new-store``);
the new store's audit trail then says which store it replaces and who asked. A marker deleted
along with the store cannot be told from a first start: that is the limit of any record kept
on the same machine, and why the marker is a separate file that ``rm agent.sqlite*`` keeps.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError

from agent.engine.store import Store, _location, utcnow
from agent.errors import RefusedError

MARKER_NAME = "stores.json"


class StoreMissing(RefusedError):
    """The store this agent had is gone; nothing was created in its place."""

    code = "store_missing"


def open_marked(url: str, data_dir: Path, *, new_store: bool, actor: str) -> Store:
    """Open the store at ``url``, refusing one that went missing (see the module's docstring)."""

    marker = data_dir / MARKER_NAME
    location = _location(url)
    marks = _read(marker)
    had = marks.get(location)
    existed = _exists(url)
    if not existed and had is not None and not new_store:
        raise StoreMissing(
            f"the store {location} is missing, but this agent had one there (store id {had.get('id')}, created "
            f"{had.get('created_at')}; recorded in {marker}). An empty store would know none of the operations, "
            "reservations and snapshots of the old one. Restore it (or mount its disk), or start with an "
            "empty store: run again with --new-store (then check the sites for work the old store recorded)",
            store=location, marker=str(marker))
    store = Store.open(url)
    if existed and had is not None:
        return store
    store_id = uuid.uuid4().hex
    if existed:  # a store from before markers, or the marker was deleted: it is this store from now on
        action, details = "store.marked", {"store_id": store_id}
    elif had is not None:
        action, details = "store.recreated", {"store_id": store_id, "replaces": had, "reason": "--new-store: the "
                                              "store this agent had was missing"}
    else:
        action, details = "store.created", {"store_id": store_id}
    store.audit(actor=actor, action=action, target=location, details=details)
    marks[location] = {"id": store_id, "created_at": utcnow().isoformat(timespec="seconds")}
    _write(marker, marks)
    return store


def forget(data_dir: Path, url: str) -> None:
    """A store removed on purpose (``demo --reset``): its next open is a first start."""

    marker = data_dir / MARKER_NAME
    marks = _read(marker)
    if marks.pop(_location(url), None) is not None:
        _write(marker, marks)


def _exists(url: str) -> bool:
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return True  # nothing on disk to go missing
        path = Path(database)
        return path.is_file() and path.stat().st_size > 0
    from agent.engine.migrate import current_revision

    engine = create_engine(url)
    try:
        return current_revision(engine) is not None
    except DatabaseError:
        return True  # cannot tell: opening it reports what is wrong
    finally:
        engine.dispose()


def _read(marker: Path) -> dict[str, Any]:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RefusedError(f"cannot read {marker}, the record of this agent's store: {exc}; fix or remove it",
                           file=str(marker)) from exc
    return data if isinstance(data, dict) else {}


def _write(marker: Path, marks: dict[str, Any]) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(marks, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, marker)
