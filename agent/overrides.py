"""The address-overrides CSV: reading it (every problem located by row and column), writing it
atomically, and the rows ``failover-agent addresses export`` writes.

One row per IP configuration of a VM's NIC. The columns, in this order::

    plan, vm, nic, ip_configuration, source_address, planned_failover_address,
    planned_test_address, failover_override, test_override

``vm``, ``nic``, ``ip_configuration``, ``failover_override`` and ``test_override`` are read; the
others say what the plan derives, for the reviewer, and are ignored on import (a file may leave
them out). An empty override cell means "no override". The file the config names in
``address_overrides_file`` holds only the read columns, one row per overridden IP configuration,
sorted, so the same overrides always make the same bytes.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from agent.config import AddressOverride, AgentConfig
from agent.yamlfile import InvalidFileError, Problem

EXPORT_COLUMNS = (
    "plan", "vm", "nic", "ip_configuration", "source_address", "planned_failover_address",
    "planned_test_address", "failover_override", "test_override",
)
FILE_COLUMNS = ("vm", "nic", "ip_configuration", "failover_override", "test_override")
COLUMN_OF = {"vm": "vm", "nic": "nic", "ip_configuration": "ip_configuration",
             "failover": "failover_override", "test": "test_override"}
"""The column of each field of :class:`AddressOverride`."""
MAX_BYTES = 16 * 1024 * 1024
"""A bound on what is read: an overrides file is one short row per IP configuration."""

Key = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Row:
    """One good row: its line in the file, the IP configuration it names, its override (None: none)."""

    line: int
    key: Key
    override: AddressOverride | None


def read_rows(path: Path) -> tuple[list[Row], list[Problem]]:
    """Every row of an overrides CSV, and every problem of the file, by line and column."""
    shown = str(path)
    try:
        if not path.is_file():
            return [], [Problem(shown, None, "", "not a regular file")]
        if path.stat().st_size > MAX_BYTES:
            return [], [Problem(shown, None, "", f"larger than {MAX_BYTES // (1024 * 1024)} MB: not an overrides file")]
        raw = path.read_bytes()
    except OSError as exc:
        return [], [Problem(shown, None, "", f"cannot read: {exc.strerror}")]
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet may save it with a byte-order mark
    except UnicodeDecodeError as exc:
        return [], [Problem(shown, None, "", f"not UTF-8 text (byte {exc.start})")]
    return parse_rows(shown, text)


def parse_rows(shown: str, text: str) -> tuple[list[Row], list[Problem]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[Problem] = []
    try:
        header = next(reader, None)
        if header is None:
            return [], [Problem(shown, 1, "", f"empty: the first row names the columns ({', '.join(FILE_COLUMNS)})")]
        names = [h.strip() for h in header]
        unknown = [n for n in names if n not in EXPORT_COLUMNS]
        missing = [c for c in FILE_COLUMNS if c not in names]
        twice = sorted({n for n in names if names.count(n) > 1})
        for n in unknown:
            problems.append(Problem(shown, 1, n, f"unknown column; the columns are {', '.join(EXPORT_COLUMNS)}"))
        for c in missing:
            problems.append(Problem(shown, 1, c, "required column is missing"))
        for n in twice:
            problems.append(Problem(shown, 1, n, "column given twice"))
        if problems:
            return [], problems
        rows: list[Row] = []
        first_line: dict[Key, int] = {}
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(names):
                problems.append(Problem(shown, line, "", f"{len(cells)} cells, the header has {len(names)}"))
                continue
            row = _row(shown, line, dict(zip(names, (c.strip() for c in cells), strict=True)), problems)
            if row is None:
                continue
            if row.key in first_line:
                problems.append(Problem(shown, line, "vm", f"VM {row.key[0]} NIC {row.key[1]} IP configuration "
                                        f"{row.key[2]} is given twice (also row {first_line[row.key]})"))
                continue
            first_line[row.key] = line
            rows.append(row)
    except csv.Error as exc:
        problems.append(Problem(shown, reader.line_num, "", f"not valid CSV: {exc}"))
    return rows, problems


def _row(shown: str, line: int, cells: dict[str, str], problems: list[Problem]) -> Row | None:
    data: dict[str, object] = {"vm": cells["vm"], "nic": cells["nic"], "ip_configuration": cells["ip_configuration"]}
    for field in ("failover", "test"):
        if cells[COLUMN_OF[field]]:
            data[field] = cells[COLUMN_OF[field]]
    has_override = "failover" in data or "test" in data
    if not has_override:
        data["failover"] = "0.0.0.0"  # a stand-in, so the other cells are checked as an override's are
    try:
        o = AddressOverride.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            column = COLUMN_OF.get(str(err["loc"][0]), "") if err["loc"] else ""
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing" or (err["type"] == "string_too_short" and not err["input"]):
                message = "must not be empty"
            problems.append(Problem(shown, line, column, message))
        return None
    return Row(line, o.key, o if has_override else None)


def render(overrides: list[AddressOverride]) -> str:
    """The overrides file's text: its columns, one row per override, sorted."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FILE_COLUMNS)
    for o in sorted(overrides, key=lambda o: o.key):
        writer.writerow([o.vm, o.nic, o.ip_configuration, o.failover or "", o.test or ""])
    return out.getvalue()


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def overrides_path(config: AgentConfig, base: Path) -> Path | None:
    """The overrides file the config names, absolute (relative to the config file's directory)."""
    if config.address_overrides_file is None:
        return None
    path = config.address_overrides_file.expanduser()
    return path if path.is_absolute() else base / path


def with_overrides_file(config: AgentConfig, base: Path) -> AgentConfig:
    """The config with the rows of its overrides file; a file not there yet holds none (the first
    ``addresses import`` writes it). A bad file is refused with every problem, located."""
    path = overrides_path(config, base)
    if path is None or not path.exists():
        return config
    rows, problems = read_rows(path)
    inline = {o.key: i for i, o in enumerate(config.address_overrides)}
    for r in rows:
        if r.key in inline:
            problems.append(Problem(str(path), r.line, "vm", f"VM {r.key[0]} NIC {r.key[1]} IP configuration "
                                    f"{r.key[2]} has an override in the config too "
                                    f"(address_overrides[{inline[r.key]}])"))
    if problems:
        raise InvalidFileError(path, problems)
    return config.with_imported_overrides(tuple((r.line, r.override) for r in rows if r.override is not None))


__all__ = [
    "EXPORT_COLUMNS",
    "FILE_COLUMNS",
    "Row",
    "overrides_path",
    "parse_rows",
    "read_rows",
    "render",
    "with_overrides_file",
    "write_atomically",
]
