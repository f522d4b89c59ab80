"""The command line's side of preflight (:mod:`agent.preflight`): run it on the configured sites,
report what failed the way every located config problem is reported (``file:line: key: what``),
refuse, and the JSON document of ``validate --json``.

``run`` preflights before anything else it does -- before the forced cleanup of expired test
failovers, before resuming unfinished operations, before the operation is recorded: each of those
changes the sites or the store, and each would stop half-way on the same missing secret or
unreachable host. A refused run records no operation (nothing a later command could pick up and
run); the refusal is written to the audit trail. There is no option to skip preflight: every
failure it finds would fail the operation later, after changes, and the one case where an
operation must go on without an endpoint -- the dark site of an unplanned failover -- is not
refused in the first place (its failures are warnings).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.markup import escape

from agent.cli.app import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, err, exit_code_for, out, print_json, report_error
from agent.cli.vocabulary import plural
from agent.configfile import LoadedConfig
from agent.errors import AgentError
from agent.preflight import ONE_SITE, PreflightReport, preflight
from agent.yamlfile import InvalidFileError, Problem

if TYPE_CHECKING:
    from rich.console import Console

    from agent.engine.journal import Journal


class PreflightRefused(InvalidFileError):
    """A secret does not resolve, or an endpoint answered that the config is wrong for it (a
    rejected TSIG key, an unknown host, a zone it does not serve). Nothing was changed."""

    code = "preflight_refused"
    hint = ("Preflight found these before anything was changed: fix what each names (a secret, a key, an "
            "address) and run again.")


class PreflightUnreachable(PreflightRefused):
    """Only endpoints that did not answer (in time): exit 3, try again later."""

    code = "preflight_unreachable"
    # Listed like every located problem (so a RefusedError by family), yet what the caller does
    # next is a transient error's: try again later.
    category = "transient"  # type: ignore[assignment]
    hint = "Preflight found these before anything was changed: try again when they answer."


def run_preflight(loaded: LoadedConfig, *, kind: str | None = None, plan: str | None = None,
                  site: str | None = None) -> PreflightReport:
    """:func:`agent.preflight.preflight` on the ports of ``loaded``'s sites. (What opening them
    noticed is printed by the command's own opening, once.)"""

    from agent.wiring import connect

    with connect(loaded) as connection:
        return preflight(loaded.config, connection.ports, kind=kind, plan=plan, site=site)


def located(loaded: LoadedConfig, report: PreflightReport) -> list[Problem]:
    """Each failure of ``report`` as a problem of the config file, at the key it comes from."""

    shown = str(loaded.path)
    return [Problem(shown, loaded.line_of(f.key), f.key, f"{f.target}: {f.detail}") for f in report.problems]


def exit_code(report: PreflightReport) -> int:
    if report.ok:
        return EXIT_OK
    return EXIT_UNREACHABLE if report.only_unreachable else EXIT_REFUSED


_NOUNS = {"secret": "secret", "vmm": "VMM server", "hyperv": "Hyper-V host", "router": "router",
          "script_host": "script host", "dns": "DNS zone"}


def summary(report: PreflightReport) -> str:
    """``preflight: all 17 checks passed in 0.02 s (2 VMM servers, 4 Hyper-V hosts, ...)``."""

    counts: dict[str, int] = {}
    for f in report.findings:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    what = ", ".join(plural(n, _NOUNS[kind]) for kind, n in counts.items())
    failed = len(report.problems) + len(report.warnings)
    head = (f"all {plural(len(report.findings), 'check')} passed" if not failed
            else f"{failed} of {plural(len(report.findings), 'check')} failed")
    return f"preflight: {head} in {report.seconds:.2f} s ({what or 'nothing to check'})"


def show(report: PreflightReport, console: Console) -> None:
    """The one-line summary and every warning (failures are shown as problems by :func:`refuse`)."""

    console.print(escape(summary(report)))
    for f in report.warnings:
        console.print(f"  [yellow]warning:[/] {escape(f.target)}: {escape(f.detail)}")


def refuse(loaded: LoadedConfig, report: PreflightReport, *, as_json: bool = False) -> NoReturn:
    """Report every failure of ``report``, located in the config, and exit (2, or 3 when only
    unreachable endpoints failed)."""

    show(report, err)
    cls = PreflightUnreachable if report.only_unreachable else PreflightRefused
    report_error(cls(loaded.path, located(loaded, report)), as_json=as_json)
    raise typer.Exit(exit_code(report))


def require_preflight(loaded: LoadedConfig) -> PreflightReport:
    """``validate --deep``: everything the config names; refused (exit 2 or 3) unless it all answers."""

    report = run_preflight(loaded)
    if not report.ok:
        refuse(loaded, report)
    return report


def preflight_before_run(loaded: LoadedConfig, kind: str, plan: str, *, actor: str, as_json: bool) -> None:
    """``run``: what an operation of ``kind`` on ``plan`` will use, before anything changes;
    a refusal is audited (no operation is recorded)."""

    from agent.cli.session import open_journal

    site = None
    if kind in ONE_SITE:  # the store is opened only when there is something to read or write
        with open_journal(loaded) as journal:
            site = _followed_to(journal, kind, plan)
    report = run_preflight(loaded, kind=kind, plan=plan, site=site)
    if report.ok:
        show(report, err if as_json else out)
        return
    with open_journal(loaded) as journal:
        journal.store.audit(actor=actor, action="run.refused_by_preflight", target=plan,
                            details={"kind": kind, "plan": plan, "problems": [f.to_dict() for f in report.problems]})
    refuse(loaded, report, as_json=as_json)


def _followed_to(journal: Journal, kind: str, plan: str) -> str | None:
    """The site the operation a follow-up of ``kind`` follows went to (the newest one of the
    plan, as the engine picks it), or None."""

    from agent.engine.model import OperationKind
    from agent.engine.service import FOLLOW_UP_OF

    followed = {k.value for k in FOLLOW_UP_OF.get(OperationKind(kind), ())}
    return next((op.target_site for op in journal.operations(limit=1000)
                 if op.kind in followed and op.plan_name == plan), None)


# -------------------------------------------------------------------------- validate --json


def validate_json(config: Path | None, *, deep: bool) -> NoReturn:
    """``validate --json``: one JSON document on stdout, whatever was found, and the exit code
    ``validate`` gives. ``problems``: what is wrong, each located (file, line, key) with its
    code; ``probes``: every preflight check made (with ``--deep``)."""

    from agent.cli.app import read_config
    from agent.cli.planning import check_against_sites
    from agent.wiring import check_available

    problems: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    path: str | None = None
    code = EXIT_OK
    try:
        loaded = read_config(config)
        path = str(loaded.path)
        check_available(loaded)
        if deep:
            from agent.cli.planning import probe_powershell_endpoints

            endpoints = probe_powershell_endpoints(loaded)
            probes = [{"kind": "powershell", "target": p.address, "key": p.key, "ok": p.ok, "code": p.outcome,
                       "detail": p.detail} for p in endpoints]
            failed = [p for p in endpoints if not p.ok]
            problems = [dict(p.to_dict(), code=f.outcome) for p, f in zip(
                loaded.located([(f.key, f"{f.address}: {f.outcome}: {f.detail}") for f in failed]).problems,
                failed, strict=True)] if failed else []
            report = run_preflight(loaded)
            probes += [f.to_dict() for f in report.findings]
            problems += [dict(p.to_dict(), code=f.code) for p, f in zip(located(loaded, report), report.problems,
                                                                        strict=True)]
            code = exit_code(report)
            if failed and code != EXIT_REFUSED:
                code = EXIT_UNREACHABLE if all(f.outcome == "unreachable" for f in failed) else EXIT_REFUSED
        if code == EXIT_OK:
            check_against_sites(loaded)
    except InvalidFileError as exc:
        # A problem may carry a code of its own; otherwise it has its error's.
        problems += [dict(p.to_dict(), code=getattr(p, "code", None) or exc.code) for p in exc.problems]
        code = EXIT_REFUSED
    except AgentError as exc:
        problems.append({"file": path or exc.fields.get("file"), "line": None, "key": "", "message": exc.message,
                         "code": exc.code})
        code = exit_code_for(exc)
    print_json({"ok": code == EXIT_OK, "config": path, "deep": deep, "problems": problems, "probes": probes})
    raise typer.Exit(code)
