"""Find, load and check the agent's config file; report every problem at once, located.

1. :func:`load_config` -- the file on its own: YAML syntax, the schema of
   :class:`agent.config.AgentConfig` (unknown keys, wrong types, plain-text secrets) and the
   cross-references inside the file (a mapping that names an unknown site, a plan step on an
   unknown host ...). Field errors and cross-reference errors come in *one* report.
2. :meth:`LoadedConfig.located` -- problems found later about the file's values (by
   ``agent.domain.validation``, against what the sites hold), located at their lines.

Both give an :class:`agent.yamlfile.InvalidFileError`, whose ``problems`` each name file, line,
key path and say what is wrong in a plain sentence.

Which file: ``--config PATH``, else ``$FAILOVER_AGENT_CONFIG``, else the demo shipped inside the
package (two simulated sites), so ``failover-agent demo`` works on a fresh install.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeGuard

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

import agent
from agent.config import CROSS_REFERENCE_MARK, AgentConfig
from agent.errors import RefusedError
from agent.overrides import with_overrides_file
from agent.yamlfile import InvalidFileError, Problem, _LineIndex, _split_loc, key_path, parse_yaml

ENV_CONFIG = "FAILOVER_AGENT_CONFIG"
ENV_DATA_DIR = "FAILOVER_AGENT_DATA_DIR"
DEMO_CONFIG_NAME = "demo.yaml"
DEMO_PLAN = "contoso-apps"
"""The recovery plan of the shipped demo (``failover-agent demo`` previews it)."""
SIM_STATE_NAME = "sim-state.json"

ConfigSource = Literal["option", "env", "demo"]


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config with the paths it implies resolved to absolute paths."""

    config: AgentConfig
    path: Path
    """The config file, absolute."""
    source: ConfigSource
    """How the file was chosen: ``--config``, ``$FAILOVER_AGENT_CONFIG`` or the shipped demo."""
    data_dir: Path
    """Store, simulator state, logs. Not created by loading."""
    simulator_inventory: Path | None
    simulator_state: Path | None
    _index: _LineIndex | None = field(default=None, repr=False, compare=False)

    @property
    def is_demo(self) -> bool:
        return self.source == "demo"

    def line_of(self, key: str) -> int | None:
        """The line of ``key`` (a dotted key path) in the file, or of its nearest enclosing key."""
        return self._index.line(_split_loc(key)) if self._index is not None and key else None

    def located(self, issues: Iterable[tuple[str, str]]) -> InvalidFileError:
        """The error reporting ``issues`` -- (dotted key path, what is wrong) -- each located at
        its line in this file, e.g. what :func:`agent.domain.validation.check_config_against_inventory`
        found."""
        shown = str(self.path)
        return InvalidFileError(shown, [Problem(shown, self.line_of(key), key, message) for key, message in issues])


# ------------------------------------------------------------------------------ where


def demo_dir() -> Path:
    """The directory of the shipped demo config and its simulator inventory.

    In a wheel the files sit in ``agent/demo/`` (pyproject maps the repository's ``config/``
    there); in a source checkout or an editable install they are read from ``config/`` itself.
    """

    package = Path(agent.__file__).resolve().parent
    for candidate in (package / "demo", package.parent / "config"):
        if (candidate / DEMO_CONFIG_NAME).is_file():
            return candidate
    raise RefusedError(
        "the demo config is missing from this installation (looked in "
        f"{package / 'demo'} and {package.parent / 'config'}); reinstall failover-agent "
        "or pass --config PATH"
    )


def default_data_dir_for_demo() -> Path:
    """A per-user writable directory: the shipped demo's own directory may be read-only."""

    override = os.environ.get(ENV_DATA_DIR)
    if override:
        return Path(override).expanduser().resolve()
    if _windows():
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        # The XDG spec says a relative value is invalid and must be ignored.
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return (base / "failover-agent" / "demo").resolve()


def _windows() -> bool:
    return os.name == "nt"


def resolve_config_path(option: str | os.PathLike[str] | None) -> tuple[Path, ConfigSource]:
    """``--config`` wins, then ``$FAILOVER_AGENT_CONFIG``, then the shipped demo."""

    if option is not None and str(option) != "":
        return _absolute(Path(option)), "option"
    env = os.environ.get(ENV_CONFIG)
    if env:
        return _absolute(Path(env)), "env"
    return (demo_dir() / DEMO_CONFIG_NAME).resolve(), "demo"


def _absolute(path: Path) -> Path:
    # A path with a NUL byte cannot be resolved (ValueError); reading it refuses it, located.
    return path if "\0" in str(path) else path.expanduser().resolve()


# ------------------------------------------------------------------------------- load


def load_config(path: str | os.PathLike[str] | None = None, *, source: ConfigSource | None = None) -> LoadedConfig:
    """Load and check a config file; ``path=None`` resolves the default (env, then demo).

    Raises :class:`InvalidFileError` with every problem of the file (schema and cross-references
    together), each located by line and key path.
    """

    if path is None or source is None:
        resolved, chosen = resolve_config_path(path)
        source = source or chosen
    else:
        resolved = _absolute(Path(path))
    # Parsed once: the report of a file that does not validate is built from the same parse.
    data, index = parse_yaml(resolved)
    if data is None:  # an empty file: every required key is missing
        data = {}
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise _complete_report(resolved, data, index, exc) from None

    base = resolved.parent
    config = with_overrides_file(config, base)  # the rows of address_overrides_file, located if bad
    # The demo's own directory may be read-only (site-packages): its state goes per user.
    data_dir = default_data_dir_for_demo() if source == "demo" else _under(base, config.agent.data_dir)
    inventory = state = None
    if config.simulator is not None:
        inventory = _under(base, config.simulator.inventory)
        state = (
            _under(data_dir if source == "demo" else base, config.simulator.state)
            if config.simulator.state is not None
            else data_dir / SIM_STATE_NAME
        )
    return LoadedConfig(config, resolved, source, data_dir, inventory, state, index)


def _under(base: Path, value: Path) -> Path:
    value = value.expanduser()
    return (value if value.is_absolute() else base / value).resolve()


# --------------------------------------------------------------- one report, not two


def _complete_report(path: Path, data: Any, index: _LineIndex, exc: ValidationError) -> InvalidFileError:
    """Rebuild the report of a file that failed validation, adding the cross-reference problems
    that pydantic skipped because fields were invalid.

    pydantic runs ``AgentConfig``'s cross-reference check only when every field is valid, so a
    file with a typo *and* a dangling reference would be fixed in two rounds. Here the fields that
    failed are cut out of a copy of the data (an unknown key deleted; a bad optional value reset
    to its default; otherwise the nearest enclosing list item dropped) and the copy is validated
    again, so the same check -- the one in ``agent.config`` -- runs on what is left. Problems it
    reports that could be a consequence of a cut (about a cut part, naming something that was
    cut, or about the file as a whole after a value was reset) are left out: a report must not
    send anyone after a problem that is not there.
    """

    shown = str(path)
    errors = exc.errors(include_url=False)
    field_errors = [e for e in errors if not _is_cross(e)]
    problems = _field_problems(shown, data, index, field_errors)
    if len(field_errors) == len(errors):
        problems += _cross_problems_despite(shown, data, index, field_errors)
    else:
        problems += _cross_lines(shown, index, [e for e in errors if _is_cross(e)], _Cuts())
    return InvalidFileError(shown, _dedupe(problems))


def _is_cross(err: ErrorDetails) -> bool:
    return _clean(err["msg"]).startswith(CROSS_REFERENCE_MARK)


def _clean(msg: str) -> str:
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if (p.key, p.message) not in seen:
            seen.add((p.key, p.message))
            out.append(p)
    return sorted(out, key=lambda p: (p.line or 0, p.key))


# ---- schema problems in plain words

_PATTERN_WORDS = {
    r"^[A-Za-z0-9._@\-]+$": "use only letters, digits, '.', '_', '@' and '-'",
    r"^(env|file):.+$": "a secret is a reference, 'env:VARIABLE' or 'file:/path/to/secret'",
}

_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "bool_type": "true/false",
    "bool_parsing": "true/false",
    "float_type": "a number",
    "float_parsing": "a number",
}

_UNION_TAG = re.compile(r"^(str|int|bool|float|list\[.*\]|dict\[.*\]|function-.*|[A-Z]\w*)$")


def _existing_prefix(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The longest prefix of ``loc`` that exists in ``data`` (union tags, ``[key]`` and missing
    keys are not in the data)."""

    node, n = data, 0
    for part in loc:
        in_dict = isinstance(node, dict) and not isinstance(part, int) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        else:
            break
        n += 1
    return loc[:n]


def _field_problems(shown: str, data: Any, index: _LineIndex, errors: list[ErrorDetails]) -> list[Problem]:
    # A union (``str | int | bool``) fails once per member; say it once, with every choice.
    grouped: dict[tuple[Any, ...], list[ErrorDetails]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        if loc and loc[-1] == "[key]":
            where = loc[:-1]
        else:
            where = _existing_prefix(data, loc)
            if err["type"] == "missing" or err["type"] == "extra_forbidden" or len(where) < len(loc) and not all(
                isinstance(p, str) and _UNION_TAG.match(p) for p in loc[len(where):]
            ):
                where = loc
        grouped.setdefault(where, []).append(err)

    problems = []
    for loc, errs in grouped.items():
        line = index.line(loc)
        key = key_path(loc)
        if len(errs) > 1 and all(e["type"] in _TYPE_WORDS for e in errs):
            kinds = list(dict.fromkeys(_TYPE_WORDS[e["type"]] for e in errs))
            message = "should be " + (", ".join(kinds[:-1]) + " or " + kinds[-1] if len(kinds) > 1 else kinds[0])
            problems.append(Problem(shown, line, key, message))
            continue
        for err in errs:
            problems.append(Problem(shown, line, key, _plain(err, loc)))
    return problems


def _plain(err: ErrorDetails, loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    msg = _clean(err["msg"])
    prefix = "this key: " if tuple(err["loc"])[-1:] == ("[key]",) else ""
    if kind == "extra_forbidden":
        return _unknown_key_message(loc)
    if kind == "missing":
        return "required key is missing"
    if kind == "model_type" and loc == ():
        return "the file must be a mapping of sections (agent:, sites:, network_mappings: ...)"
    if kind == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        return prefix + _PATTERN_WORDS.get(pattern, msg)
    if kind == "too_short" and isinstance(err.get("ctx"), dict) and err["ctx"].get("min_length") == 1:
        return prefix + "must not be empty"
    if kind == "too_long" and loc == ("sites",):
        return "exactly two sites: the primary and the recovery site (other sites go under third_sites)"
    if kind == "too_short" and loc == ("sites",):
        return "exactly two sites are needed: the primary and the recovery site"
    return prefix + msg[:1].lower() + msg[1:] if msg else kind


def _unknown_key_message(loc: tuple[Any, ...]) -> str:
    name = str(loc[-1]) if loc else ""
    allowed = _allowed_keys(loc[:-1])
    if loc[:1] == ("api",) and name == "token":
        return ("unknown key; API tokens are kept as their hash only: 'failover-agent token create' prints a new "
                "token and its 'sha256:' entry for here")
    if any(part in name.lower() for part in ("pass", "pwd", "secret", "token")) and allowed:
        home = [k for k in allowed if k in ("credential", "secret", "token", "tsig")]
        where = f" in {home[0]!r}" if home else ""
        return (
            f"unknown key; secrets are never written in the file: put a reference{where}, "
            "'env:VARIABLE' or 'file:/path/to/secret'"
        )
    msg = "unknown key (not part of the config schema)"
    if allowed:
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        if close:
            msg += f"; did you mean {close[0]!r}?"
        else:
            msg += "; allowed here: " + ", ".join(allowed)
    return msg


def _model_at(loc: tuple[Any, ...]) -> Any:
    """The type the schema expects at ``loc`` (a pydantic model class, ``dict[...]``, ...)."""

    current: Any = AgentConfig
    for part in loc:
        current = _unwrap(current)
        if _is_model(current):
            f = current.model_fields.get(str(part)) if not isinstance(part, int) else None
            if f is None:
                return None
            current = f.annotation
        elif typing.get_origin(current) in (list, tuple) and isinstance(part, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict and not isinstance(part, int):
            current = typing.get_args(current)[1]
        else:
            return None
    return _unwrap(current)


def _is_model(tp: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(models) == 1:
                tp = models[0]
            elif len(args) == 1:
                tp = args[0]
            else:
                return tp
        else:
            return tp


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model = _model_at(loc)
    if _is_model(model):
        return list(model.model_fields)
    return []


# ---- cross-references despite field errors


@dataclass
class _Cuts:
    """What was cut from the copy of the data, to translate and filter what the check says."""

    # original list path -> original indices still present, in order
    survivors: dict[tuple[Any, ...], list[int]] = field(default_factory=dict)
    cut_paths: list[tuple[Any, ...]] = field(default_factory=list)
    """Original paths of values reset or items dropped (not unknown keys: deleting one is neutral)."""
    cut_names: set[str] = field(default_factory=set)
    """Every string under a dropped part: a reference to one may dangle only because of the cut."""

    def to_original(self, loc: Iterable[Any]) -> tuple[Any, ...]:
        out: list[Any] = []
        for part in loc:
            if isinstance(part, int):
                alive = self.survivors.get(tuple(out))
                if alive is not None and 0 <= part < len(alive):
                    part = alive[part]
            out.append(part)
        return tuple(out)

    def drop_item(self, data: Any, loc: tuple[Any, ...]) -> None:
        parent_loc, idx = loc[:-1], loc[-1]
        parent = _get(data, parent_loc)
        original_parent = self.to_original(parent_loc)
        alive = self.survivors.setdefault(original_parent, list(range(len(parent))))
        original = (*original_parent, alive[idx])
        self.cut_names.update(_strings(parent[idx]))
        del parent[idx]
        del alive[idx]
        self.cut_paths.append(original)

    def reset(self, data: Any, loc: tuple[Any, ...]) -> None:
        parent = _get(data, loc[:-1])
        self.cut_names.update(_strings(parent[loc[-1]]))
        del parent[loc[-1]]
        self.cut_paths.append(self.to_original(loc))


def _get(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        data = data[part]
    return data


def _strings(value: Any) -> set[str]:
    """Every string in ``value``. Aliases make the data a graph that shares its parts: each part is
    walked once (walking it once per reference is exponential in an alias bomb)."""

    found: set[str] = set()
    seen: set[int] = set()
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, dict | list) and id(item) not in seen:
            seen.add(id(item))
            todo.extend(item.values() if isinstance(item, dict) else item)
            if isinstance(item, dict):
                todo.extend(item.keys())
    return found


_Action = tuple[Literal["delete", "drop", "reset"], tuple[Any, ...]]


def _cut_target(data: Any, err: ErrorDetails) -> _Action | None:
    """What to cut from ``data`` for ``err``. None when nothing can be cut (the error is about
    something required at the top, such as ``agent`` or ``sites``)."""

    loc = tuple(err["loc"])
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
    where = _existing_prefix(data, loc)
    if err["type"] == "extra_forbidden":
        return ("delete", where) if where == loc and where else None
    if err["type"] == "missing":
        where = _existing_prefix(data, loc[:-1])
    # Climb from the bad value to the smallest part that can go: a list item, an entry of a
    # free-form mapping, or a model field that has a default.
    while where:
        parent_type = _model_at(where[:-1])
        last = where[-1]
        if isinstance(last, int):
            return ("drop", where)
        if not _is_model(parent_type):
            return ("reset", where)  # an entry of a free-form mapping (announcements, hostnames ...)
        f = parent_type.model_fields.get(str(last))
        if f is not None and not f.is_required():
            return ("reset", where)
        where = where[:-1]
    return None


def _apply_cuts(data: Any, targets: list[_Action], cuts: _Cuts) -> None:
    # A cut inside a part that is cut anyway is moot; the rest are applied from the highest list
    # index down, so that no cut shifts the index another one was computed with.
    paths = {loc for _, loc in targets}
    kept = {
        (action, loc) for action, loc in targets
        if not any(other != loc and loc[: len(other)] == other for other in paths)
    }
    for action, loc in sorted(kept, key=lambda t: _descending(t[1]), reverse=True):
        if action == "delete":
            del _get(data, loc[:-1])[loc[-1]]
        elif action == "drop":
            cuts.drop_item(data, loc)
        else:
            cuts.reset(data, loc)


def _descending(loc: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    return tuple((1, p) if isinstance(p, int) else (0, str(p)) for p in loc)


_LIST_REF = re.compile(r"\b([a-z_]+)\[(\d+)\]")


def _cross_problems_despite(
    shown: str, data: Any, index: _LineIndex, field_errors: list[ErrorDetails]
) -> list[Problem]:
    work = copy.deepcopy(data)
    cuts = _Cuts()
    errors = field_errors
    # Each round cuts what failed; a cut can make a parent fail (a group left with no VMs), so a
    # few rounds may be needed. The bound only guards against a loop that makes no progress.
    for _ in range(8):
        if not isinstance(work, dict):
            return []
        targets = [_cut_target(work, e) for e in errors]
        if any(t is None for t in targets):
            return []
        _apply_cuts(work, [t for t in targets if t is not None], cuts)
        try:
            AgentConfig.model_validate(work)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        else:
            return []
        cross = [e for e in errors if _is_cross(e)]
        if cross:
            return _cross_lines(shown, index, cross, cuts)
    return []


def _cross_lines(shown: str, index: _LineIndex, errors: list[ErrorDetails], cuts: _Cuts) -> list[Problem]:
    problems = []
    for err in errors:
        base = tuple(err["loc"])
        for line in _clean(err["msg"])[len(CROSS_REFERENCE_MARK):].splitlines():
            key, _, text = line.partition(": ")
            loc = cuts.to_original(base + _split_loc(key))
            text = _LIST_REF.sub(lambda m: _translate_ref(m, cuts), text)
            if _tainted(loc, text, cuts):
                continue
            problems.append(Problem(shown, index.line(loc), key_path(loc), text))
    return problems


def _translate_ref(m: re.Match[str], cuts: _Cuts) -> str:
    loc = cuts.to_original((m.group(1), int(m.group(2))))
    return f"{loc[0]}[{loc[1]}]"


def _tainted(loc: tuple[Any, ...], text: str, cuts: _Cuts) -> bool:
    if not cuts.cut_paths:
        return False
    for cut in cuts.cut_paths:
        n = min(len(cut), len(loc))
        if cut[:n] == loc[:n]:  # about the cut part, or about what contains it
            return True
        owner = _owner_item(cut)
        if owner and loc[: len(owner)] == owner:  # about the same list item as the cut
            return True
    if not any(isinstance(p, int) for p in loc):
        return True  # a check of the file as a whole: its answer may rest on a reset default
    quoted = set(re.findall(r"'([^']*)'", text))
    return bool(quoted & cuts.cut_names)


def _owner_item(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    for i in range(len(loc) - 1, -1, -1):
        if isinstance(loc[i], int):
            return loc[: i + 1]
    return ()
