"""Load a YAML file into a pydantic model and report *every* problem with file, line and key.

Used for the agent's config and for the simulator's inventory. A located problem reads::

    config/site.yaml:14: network_mappings[0].ip_strategy: Input should be 'retain', 'change' or 'dhcp'
"""

from __future__ import annotations

import os
import stat
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
        # An empty file: what it lacks is missing from its first line.
        return best.start_mark.line + 1 if best is not None else 1


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


MAX_FILE_BYTES = 1024 * 1024
"""A config (or inventory) file is at most 1 MiB. A large real one (thousands of VMs) is a few
hundred KB; the pure-Python YAML parser (the one that can be bounded, below) needs seconds per
MB, so a bigger file would only be a slow way to an error."""
MAX_DEPTH = 100
"""Nesting deeper than this is refused: a real file nests less than a dozen levels, and the
composer (and every walk over the data after it) recurses once per level."""
MAX_VALUES = 200_000
"""At most this many values (scalars, lists, mappings) once every alias is expanded: an alias
bomb of a few KB would otherwise expand to billions, and every check after parsing walks them."""


def _located(shown: str, line: int | None, message: str) -> InvalidFileError:
    return InvalidFileError(shown, [Problem(shown, line, "", message)])


def read_config_text(path: Path) -> str:
    """The text of ``path``: a regular file of at most :data:`MAX_FILE_BYTES` in UTF-8 (a BOM is
    tolerated), refused with the line of the first bad byte or character otherwise."""

    shown = str(path)
    if "\0" in shown:
        raise _located(shown.replace("\0", "\\0"), None, "the path contains a NUL byte")
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer; the file type is
        # checked on the open descriptor, so nothing is read from a device or a pipe.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise _located(shown, None, f"cannot read: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _located(shown, None, f"not a regular file ({_file_type(st.st_mode)}); give the path of a YAML file")
        if st.st_size > MAX_FILE_BYTES:
            raise _located(shown, None, f"the file is {st.st_size:,} bytes; at most {MAX_FILE_BYTES:,} are read "
                           "(is this the right file?)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _located(shown, None, f"cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:  # it grew while being read
        raise _located(shown, None, f"the file is over {MAX_FILE_BYTES:,} bytes")
    return _decode(shown, raw)


def _file_type(mode: int) -> str:
    for test, word in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "not a plain file"


def _decode(shown: str, raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise _located(shown, 1, "the file is UTF-32 (it starts with a UTF-32 byte order mark); save it as UTF-8")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _located(shown, 1, "the file is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start
        line = raw.count(b"\n", 0, offset) + 1
        column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
        raise _located(shown, line, f"not UTF-8: byte 0x{raw[offset]:02X} at column {column} (byte offset "
                       f"{offset}); save the file as UTF-8") from None
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise _located(shown, line, f"control character U+{ord(bad.group()):04X} at column {column}: YAML does "
                       "not allow it (a binary file, or one in UTF-16?)")
    return text


_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE


class _Refused(yaml.composer.ComposerError):
    """A file the YAML parser would accept that this loader refuses (a bound, a duplicate key)."""

    key = ""
    """The key path it is about, when known."""


class _RefusedValue(yaml.constructor.ConstructorError):
    """A value the YAML parser reads that this loader refuses to build (too long, impossible)."""


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the bounds above, duplicate keys refused, and every value that
    cannot be built (a 5,000-digit number, the 31st of February) refused at its line."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._path: list[Any] = []
        """Where the node being composed stands: a key node or an index per level (None: a key)."""
        self._values = 0
        self._sizes: dict[int, int] = {}
        """Expanded size of each finished collection node (by id; the tree keeps them alive)."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor) if event.anchor is not None else None
            if target is not None:
                size = self._sizes.get(id(target), 1 if isinstance(target, yaml.ScalarNode) else None)
                if size is None:
                    raise _Refused(
                        None, None, f"alias *{event.anchor} refers to a value that contains it (a cycle)",
                        event.start_mark)
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        self._path.append(index)
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._path.pop()
        if node is None or isinstance(node, yaml.ScalarNode):
            self._count(1, node.start_mark if node is not None else None)
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
            self._sizes[id(node)] = 1 + sum(self._sizes.get(id(c), 1) for c in children)
            self._count(1, node.start_mark)
            if isinstance(node, yaml.MappingNode):
                _refuse_duplicate_keys(node, [*self._path, index])
        return node

    def _count(self, n: int, mark: yaml.Mark | None) -> None:
        # Exact and linear: the expanded document holds each composed value once, plus, for each
        # alias, the expanded size of what it names (itself counted when it was composed).
        self._values += n
        if self._values > MAX_VALUES:
            raise _Refused(
                None, None, f"more than {MAX_VALUES:,} values once aliases are expanded (an alias bomb?)", mark)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
            why = f": {exc}" if isinstance(exc, ValueError | OverflowError) else ""
            raise _RefusedValue(None, None, f"cannot read {node.value!r:.40} as {node.tag.rsplit(':', 1)[-1]}{why}",
                                node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_CHARS:
            raise _RefusedValue(
                None, None, f"a number of {len(node.value):,} characters; at most {MAX_INT_CHARS} are accepted",
                node.start_mark)
        return int(super().construct_yaml_int(node))


MAX_INT_CHARS = 40
_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _refuse_duplicate_keys(node: yaml.MappingNode, path: list[Any]) -> None:
    seen: dict[tuple[str, str], yaml.Node] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        first = seen.setdefault((key.tag, key.value), key)
        if first is not key:
            where = [p.value if isinstance(p, yaml.ScalarNode) else p for p in path[1:]]
            refused = _Refused(None, None, f"duplicate key (first at line {first.start_mark.line + 1}): the second "
                               "would silently replace the first", key.start_mark)
            refused.key = key_path((*(p for p in where if p is not None), key.value))
            raise refused


def parse_text(shown: str, text: str) -> tuple[Any, _LineIndex]:
    """Parse ``text`` (the file ``shown``) once: the data, and the index of the line of each key."""

    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or exc
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None:  # e.g. a duplicate anchor: where the first one is
            what = f"{context} (line {context_mark.line + 1}), {what}"
        msg = str(what) if isinstance(exc, _Refused | _RefusedValue) else f"not valid YAML: {what}"
        raise InvalidFileError(shown, [Problem(shown, line, getattr(exc, "key", ""), msg)]) from None
    finally:
        loader.dispose()
    return data, _LineIndex(node)


def parse_yaml(path: Path) -> tuple[Any, _LineIndex]:
    return parse_text(str(path), read_config_text(path))


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


def load_model(path: Path | str, model: type[M], *, cross_mark: str | None = None) -> M:
    """Parse and validate ``path`` as ``model``; raise :class:`InvalidFileError` listing every problem.

    ``cross_mark`` names the prefix of a model-level ValueError that carries several
    ``key.path: message`` lines (cross-reference checks), so each is located separately.
    """

    path = Path(path)
    data, index = parse_yaml(path)
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        raise InvalidFileError(str(path), problems_from_validation(str(path), exc, index, cross_mark)) from None
