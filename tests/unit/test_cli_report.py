"""'failover-agent report' as a site admin runs it after a drill on the demo sites: the HTML page
or the CSV, to stdout or to a file; beside a leader holding the store's lease; and the refusals
(an unknown operation, a file that cannot be written) with their exit code, writing nothing."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from agent.cli import EXIT_OK, EXIT_REFUSED, EXIT_WAITING, STORE_NAME
from agent.configfile import DEMO_PLAN
from agent.engine.lease import Lease
from agent.engine.store import Store
from agent.report import CSV_COLUMNS
from tests.rigs import OP_ID
from tests.rigs import run_cli as run

pytestmark = pytest.mark.usefixtures("cli_env")


def drill() -> str:
    """A test failover through its manual pause (confirmed by 'ops resume'), as an admin runs it."""
    paused = run("run", "--plan", DEMO_PLAN, "--kind", "test")
    assert paused.exit_code == EXIT_WAITING, paused.output
    op_id = OP_ID.search(paused.output).group()  # type: ignore[union-attr]
    resumed = run("ops", "resume", op_id)
    assert resumed.exit_code == EXIT_OK, resumed.output
    noted = run("ops", "note", op_id, "drill observed by <b>audit</b>", "--author", "carol")
    assert noted.exit_code == EXIT_OK, noted.output
    return op_id


def test_report_writes_the_drill_page_to_a_file_and_csv_to_stdout(cli_env: Path, tmp_path: Path) -> None:
    op_id = drill()
    target = tmp_path / "drill.html"
    written = run("report", op_id[:8], "--output", str(target))
    assert written.exit_code == EXIT_OK, written.output
    assert f"report of {op_id} written to {target}" in written.stdout
    html = target.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and op_id in html
    assert "carol</strong>: drill observed by &lt;b&gt;audit&lt;/b&gt;" in html
    assert not list(tmp_path.glob(".drill.html.*")), "no temporary file left behind"

    as_csv = run("report", op_id, "--csv")
    assert as_csv.exit_code == EXIT_OK, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout, newline="")))
    assert rows and tuple(rows[0]) == CSV_COLUMNS
    assert [r["record"] for r in rows].count("step") == 23
    assert {"sql01", "app01", "app02", "web01"} <= {r["vm"] for r in rows if r["record"] == "address"}

    to_stdout = run("report", op_id)
    assert to_stdout.exit_code == EXIT_OK
    made = re.compile(r"Report made [0-9-]+ [0-9:]+ UTC")  # the one line that differs: when
    assert made.sub("", to_stdout.stdout) == made.sub("", html)


def test_report_json_gives_the_facts_of_the_page(cli_env: Path) -> None:
    op_id = drill()
    result = run("report", op_id, "--json")
    assert result.exit_code == EXIT_OK, result.output
    facts = json.loads(result.stdout)
    assert op_id in result.stdout and facts["generated_at"]
    assert any("drill observed by <b>audit</b>" in json.dumps(n) for n in facts["notes"])


def test_report_works_while_another_process_holds_the_lease(cli_env: Path) -> None:
    op_id = drill()
    store = Store.open(f"sqlite:///{cli_env / STORE_NAME}")
    lease = Lease(store, lease_s=60)
    try:
        lease.acquire()
        assert lease.holds
        result = run("report", op_id, "--csv")
        assert result.exit_code == EXIT_OK, result.output
        assert op_id in result.stdout
    finally:
        lease.release()
        store.close()


def test_an_unknown_operation_is_refused_with_exit_2(tmp_path: Path) -> None:
    drill()
    target = tmp_path / "nothing.html"
    result = run("report", "op-ffffffffffff", "--output", str(target))
    assert result.exit_code == EXIT_REFUSED
    assert "no operation 'op-ffffffffffff'" in result.stderr and "ops list" in result.stderr
    assert not target.exists()


def test_a_file_that_cannot_be_written_is_refused_with_exit_2(tmp_path: Path) -> None:
    op_id = drill()
    result = run("report", op_id, "--output", str(tmp_path / "no-such-dir" / "drill.html"))
    assert result.exit_code == EXIT_REFUSED
    assert "cannot write the report to" in result.stderr and "no-such-dir" in result.stderr
