"""Load a YAML file into a pydantic model and report *every* problem with file, line and key.

Used for the agent's config and for the simulator's inventory. A located problem reads::

    config/site.yaml:14: network_mappings[0].ip_strategy: Input should be 'retain', 'change' or 'dhcp'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agent.errors import RefusedError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "key": self.key, "message": self.message}


class InvalidFileError(RefusedError):
    """A YAML file that does not parse or does not validate. ``problems`` lists each one."""

    code = "invalid_config"

    def __init__(self, path: Path | str, problems: list[Problem]) -> None:
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        body = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} {noun}:\n{body}", file=str(path), count=len(problems))


def key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class _LineIndex:
    """Maps a key path to the line where it stands (or the nearest enclosing key that exists)."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def line(self, loc: tuple[Any, ...]) -> int | None:
        node, best = self.root, self.root
        for part in loc:
            nxt = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                        nxt, best = v, k
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                nxt = best = node.value[part]
            if nxt is None:
                break
            node = nxt
        return best.start_mark.line + 1 if best is not None else None


def _split_loc(text: str) -> tuple[Any, ...]:
    """``a.b[2].c`` -> ("a", "b", 2, "c")."""
    parts: list[Any] = []
    for dotted in text.split("."):
        name, _, rest = dotted.partition("[")
        if name:
            parts.append(name)
        while rest:
            idx, _, rest = rest.partition("]")
            parts.append(int(idx))
            rest = rest.lstrip("[")
    return tuple(parts)


def parse_yaml(path: Path) -> tuple[Any, _LineIndex]:
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidFileError(shown, [Problem(shown, None, "", f"cannot read: {exc.strerror}")]) from exc
    # One parse gives both the node tree (for the line of every key) and the data built from it,
    # exactly as yaml.safe_load builds it.
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        msg = f"not valid YAML: {getattr(exc, 'problem', None) or exc}"
        raise InvalidFileError(shown, [Problem(shown, line, "", msg)]) from exc
    finally:
        loader.dispose()
    return data, _LineIndex(node)


def problems_from_validation(
    shown: str, exc: ValidationError, index: _LineIndex, cross_mark: str | None
) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if cross_mark and msg.startswith(cross_mark):
            for line in msg[len(cross_mark):].splitlines():
                key, _, text = line.partition(": ")
                full = loc + _split_loc(key)
                problems.append(Problem(shown, index.line(full), key_path(full), text))
            continue
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not part of the schema; check the spelling)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.append(Problem(shown, index.line(loc), key_path(loc), msg))
    return problems


def load_model(path: Path | str, model: type[M], *, cross_mark: str | None = None, context: dict | None = None) -> M:
    """Parse and validate ``path`` as ``model``; raise :class:`InvalidFileError` listing every problem.

    ``cross_mark`` names the prefix of a model-level ValueError that carries several
    ``key.path: message`` lines (cross-reference checks), so each is located separately.
    """
    return load_located(path, model, cross_mark=cross_mark, context=context)[0]


def load_located(path: Path | str, model: type[M], *, cross_mark: str | None = None,
                 context: dict | None = None) -> tuple[M, _LineIndex]:
    """:func:`load_model`, with the index of the lines of the file's keys (from the same parse)."""

    path = Path(path)
    data, index = parse_yaml(path)
    if data is None:
        data = {}
    try:
        return model.model_validate(data, context=context), index
    except ValidationError as exc:
        raise InvalidFileError(str(path), problems_from_validation(str(path), exc, index, cross_mark)) from None
