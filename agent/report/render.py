"""A drill report as a self-contained HTML page and as CSV.

HTML: one file, inline CSS, no script, no external asset (it is mailed, archived and opened years
later, offline). Every value is escaped by Jinja2's autoescape -- VM names, notes, error texts
and script output come from the sites, the operators and the scripts, and none of it may become
markup -- and control or bidi characters are shown as escapes (:func:`agent.terminal.visible`),
as at a terminal, so a name cannot pass itself off as another.

CSV (:data:`CSV_COLUMNS`, with a header row), one row per fact, the ``record`` column saying
which kind:

* ``operation`` -- the operation: ``status``, ``started_at``/``finished_at``, ``duration_s`` (its
  elapsed time), ``recovery_time_s`` (achieved recovery time, empty when not given), ``actor``
  (who requested it);
* ``group`` -- a recovery-plan group: ``group``, ``vm`` (its VMs, space-separated), ``status``,
  ``started_at``/``finished_at``, ``duration_s``, ``recovery_time_s``;
* ``step`` -- a journalled step: ``group``, ``step``, ``action``, ``target``, ``status``, times,
  ``duration_s``, ``error`` (its errors, ``code: message``), ``actor`` (who confirmed a manual step);
* ``address`` -- an IP configuration: ``vm``, ``group``, ``target`` (``nic#ip configuration``),
  ``action`` (``failover`` or ``test``), ``before`` (source address), ``after`` (granted address),
  ``error`` (why it was not reserved);
* ``change`` -- an audited change to an outside system: ``operation`` (this one's or a
  follow-up's id), ``at``, ``actor``, ``step``, ``action``, ``target``, ``status`` (changed,
  unchanged, refused, call failed, pending ...), ``before``, ``after``, ``error``;
* ``script`` -- a script run: ``step``, ``target`` (``host:path``), ``status``, ``before`` (its
  parameters), ``after`` (its stdout), ``error`` (its error and stderr), ``duration_s``;
* ``event`` -- an operator action or lifecycle event of the audit trail: ``at``, ``actor``,
  ``action``, ``after`` (its details as JSON);
* ``note`` -- an operator's note: ``at``, ``actor`` (its author), ``after`` (its text).

Times are ISO 8601 in UTC. A cell that a spreadsheet would take for a formula (starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is written with a leading ``'``: VM names
and script output are not to be trusted with a spreadsheet's formula engine.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jinja2
import markupsafe

from agent.report.facts import RECOVERY_DEFINITION, ChangeFact, DrillReport
from agent.terminal import visible

CSV_COLUMNS = ("operation", "record", "at", "group", "step", "action", "target", "vm", "status", "before",
               "after", "error", "actor", "started_at", "finished_at", "duration_s", "recovery_time_s")

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
"""The page's own policy (in a ``<meta>`` tag, so it holds for a file opened from disk too); an HTTP
server sending the page may send it as the ``Content-Security-Policy`` header as well."""

NOT_READ = "(not read by the step)"

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# ---------------------------------------------------------------------------- wording


def shown(value: Any) -> str:
    """A before or after value of the audit trail in a few words."""
    if value is None:
        return NOT_READ
    if isinstance(value, dict):
        if "stdout" in value and "host" in value:  # a script run: its output has a section of its own
            return "script " + ("succeeded" if value.get("succeeded") else "failed")
        if "values" in value:  # a DNS record set
            values = shown(value["values"])
            return values if value.get("ttl") is None else f"{values} (TTL {value['ttl']})"
        if "state" in value:  # a Hyper-V Replica relationship
            return str(value["state"]) + (f", test VM {value['test_vm']}" if value.get("test_vm") else "")
        if "granted_to" in value:  # a reservation
            return f"{value.get('address')} granted to {value['granted_to']}"
        return ", ".join(f"{k} {shown(v)}" for k, v in value.items() if v is not None and v != [])
    if isinstance(value, list):
        return ", ".join(shown(v) for v in value) or "none"
    return str(value)


def duration(seconds: float | None) -> str:
    """``0.42 s``, ``12.3 s``, ``4 min 05 s``, ``1 h 02 min 03 s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def utc(at: datetime | None) -> str:
    return "-" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(at: datetime | None) -> str:
    return "" if at is None else at.isoformat()


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


# ------------------------------------------------------------------------------- HTML


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("agent.report", "templates"),
        autoescape=True,  # every value, whatever the template's name
        undefined=jinja2.StrictUndefined,  # a misspelt fact fails the tests, never renders as nothing
        # Markup is a macro's output, its own values already shown; escaping it again would garble it.
        finalize=lambda v: visible(v) if isinstance(v, str) and not isinstance(v, markupsafe.Markup) else v,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(duration=duration, utc=utc, shown=shown, visible=visible)
    return env


_ENV: jinja2.Environment | None = None


def render_html(report: DrillReport, *, link: Callable[[str], str] | None = None) -> str:
    """The report as one self-contained HTML page (UTF-8 text).

    ``link(operation id)``, when given, is the URL of another operation's report (the API passes
    one so that follow-ups and the parent are links); without it they are named, not linked."""
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    start = report.created_at
    span = max(report.elapsed_s, 1e-6)

    def bar(began: datetime | None, ended: datetime | None) -> dict[str, float] | None:
        """Where a step sits on the timeline, in percent of the whole operation."""
        if began is None:
            return None
        left = (began - start).total_seconds() / span * 100
        width = ((ended or report.generated_at) - began).total_seconds() / span * 100
        return {"left": round(min(max(left, 0.0), 100.0), 2), "width": round(min(max(width, 0.3), 100.0), 2)}

    def offset(at: datetime | None) -> str:
        return "-" if at is None else "T+" + duration((at - start).total_seconds())

    return _ENV.get_template("report.html.j2").render(
        r=report, definition=RECOVERY_DEFINITION, csp=CONTENT_SECURITY_POLICY, bar=bar, offset=offset, link=link,
        changes_by_category=_by_category(report.changes), json=_json)


def _by_category(changes: list[ChangeFact]) -> list[tuple[str, list[ChangeFact]]]:
    out: dict[str, list[ChangeFact]] = {}
    for c in changes:
        out.setdefault(c.category, []).append(c)
    return list(out.items())


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


# -------------------------------------------------------------------------------- CSV


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def render_csv(report: DrillReport) -> str:
    """The report as CSV text: a header row of :data:`CSV_COLUMNS`, then one row per fact (see
    the module for what each ``record`` kind fills in)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)

    def row(**cells: Any) -> None:
        cells.setdefault("operation", report.id)
        writer.writerow([_cell(cells.get(c)) for c in CSV_COLUMNS])

    r = report
    row(record="operation", at=_iso(r.created_at), action=r.kind, target=r.plan, status=r.status,
        actor=r.requested_by, started_at=_iso(r.created_at), finished_at=_iso(r.finished_at),
        duration_s=_seconds(r.elapsed_s), recovery_time_s=_seconds(r.recovery_time_s), error=r.recovery_note)
    for g in r.groups:
        row(record="group", at=_iso(g.started_at), group=g.name, vm=" ".join(g.vms), status=g.status,
            started_at=_iso(g.started_at), finished_at=_iso(g.finished_at),
            duration_s=_seconds((g.finished_at - g.started_at).total_seconds() if g.started_at and g.finished_at
                                else None),
            recovery_time_s=_seconds(g.recovery_time_s))
    for s in r.steps:
        row(record="step", at=_iso(s.started_at), group=s.group, step=s.name, action=s.action, target=s.target,
            status=s.status, actor=s.confirmed_by, started_at=_iso(s.started_at), finished_at=_iso(s.finished_at),
            duration_s=_seconds(s.duration_s), error="; ".join(f"{e.code}: {e.message}" for e in s.errors))
    for a in r.addresses:
        row(record="address", vm=a.vm, group=a.group, target=f"{a.nic}#{a.ip_configuration}", action=a.purpose,
            before=a.before, after=a.granted, status="reserved" if a.granted else "not reserved", error=a.problem)
    for c in [*r.changes, *(c for f in r.follow_ups for c in f.changes)]:
        row(operation=c.operation_id, record="change", at=_iso(c.at), actor=c.actor, step=c.step, action=c.action,
            target=c.target, status=c.result, before=shown(c.before), after=shown(c.after),
            error="; ".join(x for x in (c.error, c.note) if x))
    for sc in r.scripts:
        row(record="script", step=sc.step, action="script", target=f"{sc.host}:{sc.path}",
            status="succeeded" if sc.succeeded else "failed", before=_json(sc.parameters), after=sc.stdout,
            error="\n".join(x for x in (sc.error, sc.stderr) if x), duration_s=_seconds(sc.duration_s))
    for e in r.events:
        row(record="event", at=_iso(e.at), actor=e.actor, action=e.action, target=e.target,
            after="" if e.details is None else _json(e.details))
    for n in r.notes:
        row(record="note", at=_iso(n.at), actor=n.author, after=n.text)
    return buf.getvalue()
