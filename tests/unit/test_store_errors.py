"""The store on a bad day, through the command line: damaged rows are reported by operation, row
and column while the rest is shown; a full disk or a file that is not a store is exit 3, never "a
bug"; a store that went missing is refused until the operator asks for a new one; a test failover
whose expiry cannot be scheduled is not left for the next command to run."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from agent.cli import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE
from agent.configfile import DEMO_PLAN, load_config
from agent.engine import store as store_module
from agent.engine.model import OperationKind, OpStatus
from agent.engine.service import Engine
from agent.engine.store import Store
from agent.engine.storemark import MARKER_NAME
from agent.wiring import connect
from tests.rigs import run_cli as run

pytestmark = pytest.mark.usefixtures("cli_env")




def store_path() -> Path:
    return load_config(None).data_dir / "agent.sqlite"


def recorded_operations(n: int) -> list[str]:
    """``n`` prepares of the demo plan recorded in the demo's store (not run: nothing outside changes)."""

    loaded = load_config(None)
    ids = []
    with connect(loaded) as connection:
        store = Store.for_path(store_path())
        engine = Engine(loaded.config, connection.ports, store)
        for _ in range(n):
            op = engine.create(OperationKind.PREPARE, DEMO_PLAN)
            engine.journal.set_status(op, OpStatus.SUCCEEDED)  # lets go of the VMs for the next one
            ids.append(op)
        store.close()
    return ids


def scribble(sql: str, *params: object) -> None:
    with sqlite3.connect(store_path()) as db:
        db.execute(sql, params)


def no_bug(result) -> None:
    assert "This is a bug" not in result.output and "Traceback" not in result.output, result.output


# ------------------------------------------------------------------------ damaged rows


def test_damaged_rows_are_named_by_operation_row_and_column_and_the_rest_is_listed() -> None:
    bad_row, bad_step, good = recorded_operations(3)
    scribble("UPDATE operations SET plan = '{not json', status = 'bogus' WHERE id = ?", bad_row)
    scribble("UPDATE steps SET started_at = 'yesterday' WHERE operation_id = ? AND ordinal = 0", bad_step)

    listed = run("ops", "list")
    no_bug(listed)
    assert listed.exit_code == EXIT_REFUSED, listed.output
    assert good in listed.stdout and bad_row not in listed.stdout and bad_step not in listed.stdout
    assert f"operation {bad_row}: operations row {bad_row}, column plan: cannot be read" in listed.stderr
    assert f"operation {bad_row}: operations row {bad_row}, column status: 'bogus' is not an operation status" \
        in listed.stderr
    assert f"operation {bad_step}: steps row " in listed.stderr and "column started_at: cannot be read" \
        in listed.stderr
    # Only the damaged cells are named: every sound date of these rows reads as the store reads it.
    assert listed.stderr.count(": cannot be read (") == 2, listed.stderr

    as_json = run("ops", "list", "--json")
    assert as_json.exit_code == EXIT_REFUSED
    assert [o["id"] for o in json.loads(as_json.stdout)] == [good]

    shown = run("ops", "show", bad_row)
    no_bug(shown)
    assert shown.exit_code == EXIT_REFUSED and "column plan" in shown.stderr and "column status" in shown.stderr
    # another operation's damage does not hide a readable one
    assert run("ops", "show", good).exit_code == EXIT_OK
    assert run("ops", "show", good[:8]).exit_code == EXIT_OK


def test_a_step_whose_outcome_is_not_an_object_is_named() -> None:
    (op,) = recorded_operations(1)
    scribble("UPDATE steps SET outcome = '[1, 2]', attempts = 'many' WHERE operation_id = ? AND ordinal = 0", op)
    shown = run("ops", "show", op)
    no_bug(shown)
    assert shown.exit_code == EXIT_REFUSED
    assert "column outcome: not a JSON object" in shown.stderr and "column attempts: not a whole number" \
        in shown.stderr


# -------------------------------------------------------------------- unusable store


def test_a_full_disk_is_exit_3_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    (op,) = recorded_operations(1)
    real = store_module._sqlite_pragmas

    def no_room_left(conn, record) -> None:  # SQLite's own SQLITE_FULL, as on a full disk
        real(conn, record)
        cur = conn.cursor()
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count = {pages}")
        cur.close()

    monkeypatch.setattr(store_module, "_sqlite_pragmas", no_room_left)
    result = run("ops", "note", op, "x" * 200_000)
    no_bug(result)
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert "cannot be used: database or disk is full" in result.stderr
    assert "free some space" in result.stderr


def test_a_file_that_is_not_a_store_is_exit_3() -> None:
    run("ops", "list")
    store_path().write_bytes(b"this is not a database" * 100)
    result = run("ops", "list")
    no_bug(result)
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert "file is not a database" in result.stderr


# ------------------------------------------------------------------------ missing store


def test_a_store_gone_missing_is_refused_until_a_new_one_is_asked_for() -> None:
    assert run("ops", "list").exit_code == EXIT_OK
    first_id = json.loads((store_path().parent / MARKER_NAME).read_text())[str(store_path())]["id"]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store_path()}{suffix}").unlink(missing_ok=True)

    refused = run("ops", "list")
    assert refused.exit_code == EXIT_REFUSED, refused.output
    assert "is missing, but this agent had one there" in refused.stderr and "--new-store" in refused.stderr
    assert not store_path().exists(), "nothing is created in its place"

    fresh = run("--new-store", "ops", "list")
    assert fresh.exit_code == EXIT_OK, fresh.output
    audit = json.loads(run("ops", "audit", "--json").stdout)
    recreated = [a for a in audit if a["action"] == "store.recreated"]
    assert len(recreated) == 1 and recreated[0]["details"]["replaces"]["id"] == first_id
    assert run("ops", "list").exit_code == EXIT_OK  # the new store is the one it has now


def test_a_first_start_and_a_store_from_before_markers_open_without_a_word() -> None:
    recorded_operations(1)  # a store made without the command line: no marker yet
    assert run("ops", "list").exit_code == EXIT_OK
    audit = json.loads(run("ops", "audit", "--json").stdout)
    assert [a["action"] for a in audit if a["action"].startswith("store.")] == ["store.marked"]


# ------------------------------------------------------ recorded, then a failure before the run


def test_a_test_failover_whose_expiry_cannot_be_scheduled_is_not_run_by_the_next_command(monkeypatch) -> None:
    from agent.scheduler import Scheduler

    def broken(self, op_id, when) -> None:
        raise OSError(28, "No space left on device")

    working = Scheduler.schedule_expiry
    monkeypatch.setattr(Scheduler, "schedule_expiry", broken)
    failed = run("run", "--plan", DEMO_PLAN, "--kind", "test")
    no_bug(failed)
    assert failed.exit_code == EXIT_UNREACHABLE, failed.output
    assert "No space left on device" in failed.stderr
    monkeypatch.setattr(Scheduler, "schedule_expiry", working)

    (op,) = json.loads(run("ops", "list", "--json").stdout)
    assert op["status"] == "cancelled"
    shown = json.loads(run("ops", "show", op["id"], "--json").stdout)
    assert "scheduling its forced cleanup failed" in shown["result"]["abandoned"]
    after = run("run", "--plan", DEMO_PLAN, "--kind", "prepare")
    assert after.exit_code == EXIT_OK, after.output
    assert "Resuming" not in after.stdout


def test_a_test_failover_age_that_overflows_the_clock_is_refused_before_anything_is_recorded(tmp_path) -> None:
    repo = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((repo / "config" / "demo.yaml").read_text(encoding="utf-8"))
    data["agent"]["data_dir"] = str(tmp_path / "var")
    data["policies"] = {"test_failover_max_age": "P999999999D"}
    shutil.copy(repo / "config" / "demo-inventory.yaml", tmp_path)
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    result = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "test")
    no_bug(result)
    assert result.exit_code == EXIT_REFUSED, result.output
    assert "policies.test_failover_max_age: a test failover's maximum age is more than 0 and at most 365 days" \
        in result.stderr
    assert not (tmp_path / "var" / "agent.sqlite").exists(), "nothing was recorded"


def test_an_unreadable_store_marker_is_refused_naming_it() -> None:
    run("ops", "list")
    marker = store_path().parent / MARKER_NAME
    marker.write_text("{half a record", encoding="utf-8")
    result = run("ops", "list")
    no_bug(result)
    assert result.exit_code == EXIT_REFUSED and f"cannot read {marker}" in result.stderr


def test_a_database_error_from_the_scheduler_is_a_store_problem_not_a_bug(monkeypatch) -> None:
    from sqlalchemy.exc import OperationalError

    from agent.scheduler import Scheduler

    def full(self, engine, *, paused=False) -> None:  # the job store shares the database
        raise OperationalError("INSERT INTO apscheduler_jobs", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(Scheduler, "start", full)
    result = run("run", "--plan", DEMO_PLAN, "--kind", "prepare")
    no_bug(result)
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert "cannot be used: database or disk is full" in result.stderr


def test_resuming_a_damaged_operation_names_the_damage() -> None:
    (op,) = recorded_operations(1)
    scribble("UPDATE operations SET status = 'failed', created_at = 'last tuesday' WHERE id = ?", op)
    result = run("ops", "resume", op)
    no_bug(result)
    assert result.exit_code == EXIT_REFUSED, result.output
    assert f"operation {op}: operations row {op}, column created_at: cannot be read" in result.stderr


def test_a_damaged_audit_entry_is_named_and_the_rest_of_the_trail_is_shown() -> None:
    (op,) = recorded_operations(1)
    run("ops", "note", op, "checked the pools")
    scribble("INSERT INTO audit (at, operation_id, actor, action, details) VALUES ('yesterday', ?, 'x', 'y', '{}')", op)
    scribble("INSERT INTO audit (at, operation_id, actor, action, details) "
             "VALUES ('2026-12-02 10:00:00.000000', ?, 'x', 'z', '{broken')", op)

    shown = run("ops", "audit", op)
    no_bug(shown)
    assert shown.exit_code == EXIT_REFUSED, shown.output
    assert "checked the pools" in shown.stdout
    damage = [line for line in shown.stderr.splitlines() if ": cannot be read (" in line]
    assert len(damage) == 2, shown.stderr
    assert "column at: cannot be read" in damage[0] and "column details: cannot be read" in damage[1]

    as_json = run("ops", "audit", op, "--json")
    assert as_json.exit_code == EXIT_REFUSED
    assert "y" not in [a["action"] for a in json.loads(as_json.stdout)]
