"""``failover-agent addresses export|import --csv``: review and set address overrides in bulk,
as SRM's DR IP Customizer does with its CSV.

Export lists every IP configuration of the recovery plans' VMs with what the plans derive and
any override. Import checks the whole file against the config and the sites -- every problem by
row and column -- and writes the overrides file the config names (``address_overrides_file``)
only when every row is good, atomically. Each imported row decides its IP configuration's
override (empty cells: none); IP configurations the file does not list keep theirs. An export
imported unchanged changes nothing.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from agent.cli.app import ConfigOption, app, err, out, read_config, reporting
from agent.cli.sites import open_sites
from agent.config import AddressOverride
from agent.configfile import LoadedConfig
from agent.domain.model import Inventory
from agent.domain.overridecheck import Key, OverrideIssue, check_overrides
from agent.errors import RefusedError
from agent.overrides import COLUMN_OF, EXPORT_COLUMNS, overrides_path, read_rows, render, write_atomically
from agent.yamlfile import InvalidFileError, Problem

addresses_app = typer.Typer(
    help="Review and set address overrides in bulk (the operator's own failover and test addresses "
    "per VM, NIC and IP configuration) as CSV: export, edit in a spreadsheet, import.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(addresses_app, name="addresses")

CsvFlag = Annotated[bool, typer.Option("--csv", help="CSV, with a header row (the only format).")]

Origin = tuple[str, int | None, str]
"""Where an override is written: (file, line, key path or column, with ``{}`` for the field)."""


# ----------------------------------------------------------------------- locating


def _origins(loaded: LoadedConfig) -> dict[Key, Origin]:
    shown = str(loaded.path)
    found: dict[Key, Origin] = {}
    for i, o in enumerate(loaded.config.address_overrides):
        found[o.key] = (shown, None, f"address_overrides[{i}].{{}}")
    path = overrides_path(loaded.config, loaded.path.parent)
    for line, o in loaded.config.imported_overrides:
        found[o.key] = (str(path), line, "{}")
    return found


def located_problems(loaded: LoadedConfig, issues: list[OverrideIssue],
                     origins: dict[Key, Origin] | None = None) -> list[Problem]:
    """Each issue at the line of the override it is about: ``address_overrides[i].failover`` in
    the config, or the row and column of a CSV row."""
    where = origins if origins is not None else _origins(loaded)
    problems = []
    for issue in issues:
        file, line, key = where.get(issue.key, (str(loaded.path), None, "address_overrides"))
        if key == "{}":
            problems.append(Problem(file, line, COLUMN_OF.get(issue.field, issue.field), issue.message))
        else:
            path = key.format(issue.field)
            problems.append(Problem(file, loaded.line_of(path), path, issue.message))
    return problems


def overrides_summary(loaded: LoadedConfig) -> str:
    """The line of ``validate``'s summary: how many overrides, and from where."""
    cfg = loaded.config
    text = f"address overrides: {len(cfg.address_overrides)} in the config"
    path = overrides_path(cfg, loaded.path.parent)
    if path is not None:
        text += (f", {len(cfg.imported_overrides)} in {path}" if path.exists()
                 else f"; {path} does not exist yet ('addresses import' writes it)")
    return text


def override_problems(loaded: LoadedConfig, inventory: Inventory) -> list[Problem]:
    """What ``validate`` reports about the config's address overrides, located."""
    return located_problems(loaded, check_overrides(loaded.config, inventory))


# ------------------------------------------------------------------------- export


def export_rows(loaded: LoadedConfig, inventory: Inventory) -> tuple[list[list[str]], list[str]]:
    """The export's rows (without header), and warnings for what could not be planned."""
    from agent.domain.plan import PlanKind, ReserveIp
    from agent.domain.planning import build_plan
    from agent.domain.validation import PlanRefused

    config = loaded.config
    overrides = {o.key: o for o in config.overrides}
    replications = {r.vm: r for r in inventory.replications}
    vms = {(vm.site, vm.name): vm for vm in inventory.vms}
    rows: list[list[str]] = []
    warnings: list[str] = []
    listed: set[str] = set()
    for plan in config.recovery_plans:
        planned: dict[tuple[str, str, int, str], str] = {}
        kinds: tuple[PlanKind, ...] = ("planned", "test")
        for kind in kinds:
            try:
                built = build_plan(config, inventory, plan.name, kind)
            except PlanRefused as exc:
                warnings.append(f"{kind} failover of plan {plan.name} is refused ({len(exc.reasons)} reasons, see "
                                f"'failover-agent plan'): its planned {kind} addresses are left empty")
                continue
            for c in built.of(ReserveIp):
                planned[(c.vm, c.nic, c.ip_index, c.purpose)] = c.address
        for name in plan.vms:
            if name in listed:
                continue
            listed.add(name)
            rep = replications.get(name)
            vm = vms.get((rep.primary_site, name)) if rep is not None else None
            if vm is None:
                warnings.append(f"VM {name} of plan {plan.name} is not a replicated VM of the sites: not listed")
                continue
            for nic in vm.nics:
                for i, c in enumerate(nic.ip_configurations):
                    o = overrides.get((name, nic.name, i))
                    rows.append([plan.name, name, nic.name, str(i), c.address or "dhcp",
                                 planned.get((name, nic.name, i, "failover"), ""),
                                 planned.get((name, nic.name, i, "test"), ""),
                                 (o.failover or "") if o else "", (o.test or "") if o else ""])
    return rows, warnings


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()


@addresses_app.command("export", help="Write every IP configuration of the recovery plans' VMs as CSV: "
                       "plan, VM, NIC, IP configuration, source address, the planned failover and test "
                       "addresses, and any failover or test override. To FILE, else to stdout.")
def export(
    file: Annotated[Path | None, typer.Argument(metavar="[FILE]", dir_okay=False, show_default=False)] = None,
    as_csv: CsvFlag = False,
    config: ConfigOption = None,
) -> None:
    with reporting():
        _need_csv(as_csv)
        loaded = read_config(config)
        with open_sites(loaded) as sites:
            rows, warnings = export_rows(loaded, sites.read)
        for w in warnings:
            err.print(f"[yellow]warning:[/] {escape(w)}")
        text = _csv_text(rows)
        if file is None or str(file) == "-":
            sys.stdout.write(text)
            return
        _write(file.resolve(), text)
        err.print(f"wrote {len(rows)} IP configurations to {escape(str(file))}")


# ------------------------------------------------------------------------- import


def _write(path: Path, text: str) -> None:
    try:
        write_atomically(path, text)
    except OSError as exc:
        raise RefusedError(f"cannot write {path}: {exc.strerror or exc}; the file is as it was",
                           file=str(path)) from exc


def _need_csv(as_csv: bool) -> None:
    if not as_csv:
        raise RefusedError("say the format: --csv (the only one)")


class NothingImported(InvalidFileError):
    """A CSV with bad rows: every problem is listed, and the overrides file is left as it was."""

    hint = "Nothing was imported: fix these rows and import the file again."


def plan_import(loaded: LoadedConfig, file: Path,
                inventory: Inventory | None) -> tuple[list[AddressOverride], list[Problem]]:
    """The overrides file's new content after importing ``file``, and every problem (none: apply)."""
    config = loaded.config
    rows, problems = read_rows(file)
    inline = {o.key: (i, o) for i, o in enumerate(config.address_overrides)}
    merged = {o.key: (line, o) for line, o in config.imported_overrides}
    origins = _origins(loaded)
    shown = str(file)
    for r in rows:
        if r.key in inline:
            i, o = inline[r.key]
            if r.override != o:
                problems.append(Problem(shown, r.line, "vm", (
                    f"VM {r.key[0]} NIC {r.key[1]} IP configuration {r.key[2]} has its override in the config "
                    f"({loaded.path}:{loaded.line_of(f'address_overrides[{i}]')}: address_overrides[{i}]); "
                    f"change it there")))
            continue
        merged.pop(r.key, None)
        if r.override is not None:
            merged[r.key] = (r.line, r.override)
        origins[r.key] = (shown, r.line, "{}")
    if inventory is not None:
        trial = config.with_imported_overrides(tuple(merged.values()))
        problems += located_problems(loaded, check_overrides(trial, inventory), origins)
    return [o for _, o in merged.values()], sorted(problems, key=lambda p: (p.file != shown, p.line or 0, p.key))


@addresses_app.command("import", help="Check a CSV of address overrides (as 'addresses export' writes it) "
                       "against the config and the sites, and write them to the config's "
                       "address_overrides_file. Every problem is listed by row and column, and nothing is "
                       "written unless every row is good. Each row sets its IP configuration's overrides "
                       "(empty cells: none); IP configurations not in the file keep theirs.")
def import_(
    file: Annotated[Path, typer.Argument(metavar="FILE", dir_okay=False, show_default=False)],
    as_csv: CsvFlag = False,
    config: ConfigOption = None,
) -> None:
    with reporting():
        _need_csv(as_csv)
        loaded = read_config(config)
        target = overrides_path(loaded.config, loaded.path.parent)
        if target is None:
            raise RefusedError(f"{loaded.path} names no address_overrides_file to import into; add e.g. "
                               "'address_overrides_file: address-overrides.csv' to it", file=str(loaded.path))
        with open_sites(loaded) as sites:
            overrides, problems = plan_import(loaded, file, sites.read)
        if problems:
            raise NothingImported(file, problems)
        text = render(overrides)
        before = target.read_text(encoding="utf-8") if target.is_file() else None
        if before == text or (before is None and not overrides):
            out.print(f"no change: {escape(str(target))} already holds these {len(overrides)} overrides")
            return
        _write(target, text)
        out.print(f"imported: {escape(str(target))} now holds {len(overrides)} address override"
                  f"{'s' if len(overrides) != 1 else ''}; preview with 'failover-agent plan'")
