"""``failover-agent report OP``: the drill report of an operation, as a self-contained HTML page
or as CSV (:mod:`agent.report`). Reads the store only, so it works while the sites cannot be
reached and beside a ``serve`` leader holding the lease."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.app import ConfigOption, app, out, read_config, reporting
from agent.cli.operations import OpArgument, _resolve_op
from agent.cli.remote import remote_agent
from agent.cli.session import open_journal
from agent.errors import RefusedError


class ReportNotWritten(RefusedError):
    code = "report_not_written"


@app.command(
    "report",
    help="The drill report of an operation, for the auditor after a DR drill: what ran, the timeline "
    "of groups and steps with the achieved recovery time, every change with before and after (addresses, "
    "routes, DNS records), errors, script output, notes and who confirmed each manual step, and the "
    "operations that followed it up (a test failover's cleanup). A self-contained HTML page (no script, "
    "no external file), CSV with --csv, or its facts as JSON with --json. Reads the store only.\n\n"
    "Exit codes: 0 written (whatever the operation's status); 2 no such operation, bad config, or FILE "
    "cannot be written (nothing written); 3 the store cannot be used.",
)
def report_command(
    op: OpArgument,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV (one row per step, change, event ...), not HTML.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The report's facts as one JSON document, not HTML.")]
    = False,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", dir_okay=False,
        help="Write it to FILE (replaced whole, never left half-written). Default: stdout.")] = None,
    config: ConfigOption = None,
) -> None:
    from agent.report import build_report, render_csv, render_html

    with reporting(as_json=as_json):
        if as_csv and as_json:
            raise RefusedError("--csv or --json: one report at a time")
        form = "csv" if as_csv else "json" if as_json else "html"
        if (agent := remote_agent(config)) is not None:
            from agent.cli.remote_ops import remote_report

            remote_report(agent, op, form, output)
            return
        loaded = read_config(config)
        with open_journal(loaded) as journal:
            op_id = _resolve_op(journal, op)
            report = build_report(journal.store, op_id)
        text = {"csv": render_csv, "html": render_html}[form](report) if form != "json" else \
            json.dumps(report.to_json(), indent=2) + "\n"
        if output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        _write(output, text)
        out.print(f"report of {op_id} written to {output}", markup=False)


def _write(path: Path, text: str) -> None:
    """``text`` into ``path`` atomically: a reader (or a crash) never sees half a report."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            # newline="": CSV rows end in CRLF as RFC 4180 says, on every platform.
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ReportNotWritten(f"cannot write the report to {path}: {exc.strerror or exc}", file=str(path)) from exc
