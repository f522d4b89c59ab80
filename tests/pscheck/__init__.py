"""The gate every shipped PowerShell script passes: it parses, and every cmdlet call binds.

Parsing uses tree-sitter-powershell 0.26.4, which rejects three constructs that Windows
PowerShell accepts (cmdlets-and-libraries.md, issue 11). They are neutralised in a copy of the
source of the same length -- so every byte offset, and every reported line, is the original's --
and the checker's own tests prove each is a false positive of the grammar, not of the script:

- a parameter name holding digits (``-IPv4Address``) is split into ``-IPv`` and a command
  ``4Address``: the digits are replaced by letters for parsing, the name is read from the source;
- a bareword list after a command (``Select-Object Name, Id``) fails at ``, Id``: the comma is
  moved before its space (``Name ,Id``), which the grammar reads as the same list;
- numeric literals with a multiplier suffix (``1MB``) fail in some expression positions: the
  suffix is replaced by digits of the same length.

Then every command is bound against the cmdlet catalog (``tests/data/cmdlet-catalog.json.gz``,
the documented syntax of each cmdlet from Microsoft's help sources, with the page of each, as
``../shared/reference/cmdlet-catalog.json`` holds it): each named parameter must resolve (by
name, alias or unique prefix, PowerShell's own rules) to a parameter of the cmdlet or a common
parameter of Windows PowerShell 5.1; the parameters given together must fit one parameter set;
positional arguments must have positions left in it; and, unless a splat or the pipeline may
supply them, its mandatory parameters must be given. A command name the VMM module aliases
(``Get-VM`` -> ``Get-SCVirtualMachine``) must be module-qualified.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

CATALOG = Path(__file__).parents[1] / "data" / "cmdlet-catalog.json.gz"
POWERSHELL_VERSION = (5, 1)

_DIGIT_PARAMETER = re.compile(rb"(?<![\w$])-([A-Za-z]+)(\d+)([A-Za-z][\w]*)")
_BAREWORD_LIST = re.compile(rb"(?<=[A-Za-z0-9_]), (?=[A-Za-z_][\w]*)")
_MULTIPLIER = re.compile(rb"(?<![\w.$-])(\d+)(KB|MB|GB|TB|PB)\b", re.IGNORECASE)
_VERB_NOUN = re.compile(r"^(?:[\w.-]+\\)?[A-Za-z]+-[A-Za-z][\w]*$")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    command: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.command}: {self.problem}"


def neutralise(source: bytes) -> bytes:
    """``source`` with the grammar's known false positives rewritten, byte for byte as long."""
    out = _DIGIT_PARAMETER.sub(lambda m: b"-" + m[1] + b"X" * len(m[2]) + m[3], source)
    out = _MULTIPLIER.sub(lambda m: m[1] + b"0" * len(m[2]), out)
    out = _BAREWORD_LIST.sub(b" ,", out)
    assert len(out) == len(source)
    return out


@cache
def _parser() -> Any:
    import tree_sitter_powershell
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_powershell.language()))


def parse(source: bytes) -> Any:
    return _parser().parse(neutralise(source))


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for child in node.children:
        yield from _walk(child)


def syntax_errors(path: str, source: bytes) -> list[Finding]:
    tree = parse(source)
    return [Finding(path, n.start_point[0] + 1, "(syntax)",
                    f"does not parse near {source[n.start_byte:n.end_byte][:40]!r}")
            for n in _walk(tree.root_node) if n.type == "ERROR" or n.is_missing]


# ------------------------------------------------------------------------------------ the calls


@dataclass
class Argument:
    parameter: str | None
    """The parameter name as written (without the dash), or None for a positional argument."""
    bound: bool = False
    """``-Name:value``: the value is part of the parameter token."""
    value: str | None = None


@dataclass
class CommandCall:
    name: str
    line: int
    elements: list[tuple[str, str, bool]] = field(default_factory=list)
    """(kind, text, joined-to-previous): kind is ``parameter``, ``colon``, ``splat`` or ``value``."""
    piped: bool = False
    """The command receives pipeline input (it is not first in its pipeline)."""


def commands(source: bytes) -> list[CommandCall]:
    # Structure is read from the parsed (neutralised) text, parameter names from the original.
    parsed = neutralise(source)
    tree = _parser().parse(parsed)
    found: list[CommandCall] = []
    for node in _walk(tree.root_node):
        if node.type != "command":
            continue
        name_node = node.child_by_field_name("command_name") or next(
            (c for c in node.children if c.type == "command_name"), None)
        if name_node is None:
            continue
        call = CommandCall(source[name_node.start_byte:name_node.end_byte].decode(), node.start_point[0] + 1)
        prev = node.prev_named_sibling
        call.piped = prev is not None and prev.type == "command" or _after_pipe(source, node.start_byte)
        elements = next((c for c in node.children if c.type == "command_elements"), None)
        joined = False
        for child in elements.children if elements is not None else []:
            original = child.type == "command_parameter"
            text = (source if original else parsed)[child.start_byte:child.end_byte].decode()
            if child.type == "command_argument_sep":
                if text == ":":
                    call.elements.append(("colon", text, True))
                joined = text == ""
                continue
            kind = "parameter" if child.type == "command_parameter" else (
                "splat" if text.startswith("@") and re.fullmatch(r"@\w+", text) else "value")
            call.elements.append((kind, text, joined))
            joined = False
        found.append(call)
    return found


def _after_pipe(source: bytes, start: int) -> bool:
    i = start - 1
    while i >= 0 and source[i:i + 1] in b" \t\r\n":
        i -= 1
    return i >= 0 and source[i:i + 1] == b"|"


def defined_functions(source: bytes) -> set[str]:
    return {m.decode().casefold() for m in re.findall(rb"(?im)^\s*function\s+([\w-]+)", source)}


# ----------------------------------------------------------------------------------- the catalog


@cache
def catalog() -> dict[str, Any]:
    with gzip.open(CATALOG, "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


@cache
def _cmdlets() -> dict[str, dict[str, Any]]:
    return {name.casefold(): entry | {"name": name} for name, entry in catalog()["cmdlets"].items()}


def _available(entry: dict[str, Any]) -> bool:
    added = entry.get("added_in_powershell")
    return added is None or tuple(int(p) for p in str(added).split(".")) <= POWERSHELL_VERSION


def _common(cmdlet: dict[str, Any]) -> dict[str, dict[str, Any]]:
    common = {n: p for n, p in catalog()["common_parameters"]["parameters"].items() if _available(p)}
    if not cmdlet.get("supports_should_process"):
        common = {n: p for n, p in common.items() if p.get("kind") != "shouldprocess"}
    return common if cmdlet.get("common_parameters", True) else {}


def _resolve(cmdlet: dict[str, Any], written: str) -> tuple[str | None, str | None]:
    """(parameter name, problem) for ``-written`` on ``cmdlet``, as PowerShell binds names:
    an exact name or alias wins, else a unique prefix."""
    own = {n: p for n, p in cmdlet["parameters"].items() if _available(p)}
    everything = own | _common(cmdlet)
    key = written.casefold()
    for name, p in everything.items():
        if key == name.casefold() or key in (a.casefold() for a in p.get("aliases", [])):
            return name, None
    prefixed = sorted({name for name, p in everything.items()
                       if any(n.casefold().startswith(key) for n in [name, *p.get("aliases", [])])})
    if len(prefixed) == 1:
        return prefixed[0], None
    if prefixed:
        return None, f"ambiguous parameter -{written} ({', '.join(prefixed)})"
    return None, f"unknown parameter -{written}"


def _is_switch(cmdlet: dict[str, Any], name: str) -> bool:
    p = cmdlet["parameters"].get(name) or catalog()["common_parameters"]["parameters"].get(name, {})
    return str(p.get("type", "")).endswith("SwitchParameter")


def check_call(path: str, call: CommandCall, local_functions: set[str]) -> list[Finding]:
    """Every problem of one command call (none for a command that is not a cmdlet)."""
    if not _VERB_NOUN.match(call.name) or call.name.casefold() in local_functions:
        return []
    module, _, bare = call.name.rpartition("\\")
    problems: list[str] = []
    aliases = {a.casefold(): target for a, target in catalog()["vmm_module_aliases"]["aliases"].items()}
    if not module and bare.casefold() in aliases:
        problems.append(f"with VirtualMachineManager loaded this runs {aliases[bare.casefold()]}: "
                        "module-qualify it (Hyper-V\\" + bare + ") or call the SC cmdlet")
    cmdlet = _cmdlets().get(bare.casefold())
    if cmdlet is None:
        return [Finding(path, call.line, call.name, "unknown cmdlet: not in the catalog")]
    if module and module.casefold() != cmdlet["module"].casefold():
        problems.append(f"module {module} does not hold it (the catalog has it in {cmdlet['module']})")
    named: dict[str, str] = {}
    positional = 0
    splat = False
    elements = call.elements
    i = 0
    while i < len(elements):
        kind, text, _ = elements[i]
        if kind == "splat":
            splat = True
        elif kind == "parameter":
            written = text.lstrip("-\u2013\u2014")
            name, problem = _resolve(cmdlet, written)
            if problem:
                problems.append(problem)
                if i + 1 < len(elements) and elements[i + 1][0] == "value":
                    i += 1  # an unknown parameter's value is not a positional argument
            elif name is not None:
                if name in named:
                    problems.append(f"parameter -{name} given twice")
                named[name] = written
            colon = i + 1 < len(elements) and elements[i + 1][0] == "colon"
            if colon:
                i += 2  # the colon, then its value
            elif name is not None and not _is_switch(cmdlet, name):
                if i + 1 < len(elements) and elements[i + 1][0] == "value":
                    i += 1
                    while i + 1 < len(elements) and elements[i + 1][2]:
                        i += 1  # a list written a,b is several tokens joined without a separator
                else:
                    problems.append(f"parameter -{name} has no argument")
        elif kind == "value" and not text.startswith(","):
            positional += 1
        i += 1
    problems.extend(_fit(cmdlet, set(named), positional, splat=splat, piped=call.piped))
    return [Finding(path, call.line, call.name, p) for p in problems]


def _fit(cmdlet: dict[str, Any], named: set[str], positional: int, *, splat: bool, piped: bool) -> list[str]:
    common = set(_common(cmdlet))
    own = named - common
    sets = cmdlet["parameter_sets"]
    fitting = [s for s in sets if own <= {p["name"] for p in s["parameters"]}]
    if not fitting:
        return [f"parameters {sorted(own)} fit no single parameter set"]
    if positional:
        fitting = [s for s in fitting if positional <= sum(
            1 for p in s["parameters"] if p.get("position") is not None and p["name"] not in own)]
        if not fitting:
            return [f"{positional} positional argument(s) but no parameter set has that many positions left"]
    if splat:
        return []
    for s in fitting:
        missing = [p for p in s["parameters"] if p.get("mandatory") and p["name"] not in own]
        unfilled_positions = sorted((p for p in missing if p.get("position") is not None), key=lambda p: p["position"])
        missing = [p for p in missing if p not in unfilled_positions[:positional]]
        if piped:
            missing = [p for p in missing if not p.get("pipeline")]
        if not missing:
            return []
    missing_by_set = {s["name"]: [p["name"] for p in s["parameters"] if p.get("mandatory") and p["name"] not in own]
                      for s in fitting}
    return [f"missing mandatory parameters in every parameter set that fits: {missing_by_set}"]


def check_file(path: Path, root: Path | None = None) -> list[Finding]:
    source = path.read_bytes()
    shown = str(path.relative_to(root)) if root else str(path)
    findings = syntax_errors(shown, source)
    local = defined_functions(source)
    for call in commands(source):
        findings.extend(check_call(shown, call, local))
    return findings


def cmdlets_used(source: bytes) -> set[str]:
    local = defined_functions(source)
    return {c.name.rpartition("\\")[2] for c in commands(source)
            if _VERB_NOUN.match(c.name) and c.name.casefold() not in local}


@dataclass(frozen=True)
class ScriptParameter:
    name: str
    mandatory: bool
    type: str


def script_parameters(source: bytes) -> list[ScriptParameter]:
    """The parameters of a script's own ``param()`` block (not of functions inside it)."""
    tree = parse(source)
    block = next((c for c in tree.root_node.children if c.type == "param_block"), None)
    found: list[ScriptParameter] = []
    for node in _walk(block) if block is not None else []:
        if node.type != "script_parameter":
            continue
        variable = next(c for c in node.children if c.type == "variable")
        attributes = next((c for c in node.children if c.type == "attribute_list"), None)
        text = source[attributes.start_byte:attributes.end_byte].decode() if attributes is not None else ""
        mandatory = re.search(r"Mandatory\s*(=\s*\$true)?\s*[,)]", text, re.IGNORECASE) is not None
        types = re.findall(r"\[([\w.]+(?:\[\])?)\]", text)
        found.append(ScriptParameter(source[variable.start_byte + 1:variable.end_byte].decode(), mandatory,
                                     types[-1] if types else "object"))
    return found
