"""How the audit trail and a script run's output read at a terminal (``ops audit``, ``ops show``).

Values come from the store as the engine wrote them (:mod:`agent.engine.audit`); the lines
made here are plain text -- names, record values and script output are the sites' and the
scripts' own words -- so the caller prints them without markup.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from agent.cli.vocabulary import Cell, columns, duration, utc_time

if TYPE_CHECKING:
    from agent.engine.store import AuditRow

NOT_READ = "(not read by the step)"


def shown(value: Any) -> str:
    """A before or after value in a few words."""
    if value is None:
        return NOT_READ
    if isinstance(value, dict):
        if "values" in value:  # a DNS record set
            values = shown(value["values"])
            return values if value.get("ttl") is None else f"{values} (TTL {value['ttl']})"
        if "state" in value:  # a Hyper-V Replica relationship
            return value["state"] + (f", test VM {value['test_vm']}" if value.get("test_vm") else "")
        return ", ".join(f"{k} {shown(v)}" for k, v in value.items() if v is not None and v != [])
    if isinstance(value, list):
        return ", ".join(shown(v) for v in value) or "none"
    return str(value)


def script_lines(record: dict[str, Any]) -> list[str]:
    """A script run: how it ended, what it was given and wrote, and what it printed."""
    how = "succeeded" if record.get("succeeded") else "failed"
    lines = [f"{record.get('host')}:{record.get('path')} {how} in {duration(float(record.get('duration_s') or 0))}"
             + (f": {record['error']}" if record.get("error") else "")]
    if record.get("parameters"):
        lines.append("parameters: " + ", ".join(f"{k}={v}" for k, v in record["parameters"].items()))
    if record.get("output"):
        lines.append("wrote: " + json.dumps(record["output"], sort_keys=True, default=str))
    for stream in ("stdout", "stderr"):
        text = record.get(stream) or ""
        cut = record.get(f"{stream}_truncated")
        if not text and not cut:
            lines.append(f"{stream}: (nothing)")
            continue
        lines.append(f"{stream}:" + (f" (truncated: the first {cut['kept_bytes']} of {cut['total_bytes']} bytes "
                                     "are kept)" if cut else ""))
        lines += ["  " + line for line in text.splitlines()]
    return lines


def audit_lines(details: Any) -> tuple[str, list[str]]:
    """(result, lines below the row) of an audit row's details."""
    if not isinstance(details, dict):
        return "", [] if details is None else [json.dumps(details, sort_keys=True, default=str)]
    if "result" not in details:  # an operator action or a lifecycle event
        return "", [f"{k}: {v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)}"
                    for k, v in sorted(details.items())]
    result = details["result"] + (f" ({details['error']})" if details.get("error") else "")
    lines = [f"step {details.get('step', '?')}"]
    after = details.get("after")
    if isinstance(after, dict) and "stdout" in after:
        lines += script_lines(after)
    else:
        lines += [f"before: {shown(details.get('before'))}", f"after:  {shown(after)}"]
    if details.get("note"):
        lines.append(f"note: {details['note']}")
    if details["result"] == "pending":
        lines.append("note: the agent stopped before this call's end was recorded; resuming the operation "
                     "completes this entry")
    return result, lines


def print_audit(rows: list[AuditRow], op_id: str | None, as_json: bool) -> None:
    """``ops audit``: the entries as JSON, or a row each with the lines of its details below."""


    from agent.cli.app import out, print_json

    if as_json:
        print_json([{"at": r.at.isoformat(), "actor": r.actor, "action": r.action, "target": r.target,
                     "operation": r.operation_id, "details": r.details} for r in rows])
        return
    if not rows:
        out.print("the audit trail is empty" + (f" for {op_id}" if op_id else ""))
        return
    table: list[list[Cell]] = []
    below: list[list[str]] = []
    for r in rows:
        result, lines = audit_lines(r.details)
        table.append([utc_time(r.at).removesuffix(" UTC"), r.actor, r.action, r.operation_id or "-",
                      r.target or "-", result])
        below.append(lines)
    header, *lines_of_rows = columns(["AT (UTC)", "ACTOR", "ACTION", "OPERATION", "TARGET", "RESULT"], table)
    out.print(header)
    for line, details in zip(lines_of_rows, below, strict=True):
        out.print(line)
        for text in details:
            # The sites' and scripts' own words: printed as they are, never as markup.
            out.print("    " + text, markup=False)
