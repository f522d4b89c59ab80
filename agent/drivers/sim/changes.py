"""Knowing what a call changed without diffing the world: the state seen through a recording mapping.

A mutating call gets :class:`Tracked` instead of the plain state. It behaves like the dict it
wraps, and it notes the path of every *entry* the call reached by key: a VM, a grant, a pool, a
replication, one DNS record set, one route. ``SCHEMA`` says where entries sit in the tree (a VM
is ``vms[site][name]``, a grant ``grants[site][pool][address]``); everything above an entry is a
container the mapping wraps again, everything from the entry down is the plain dict, which the
driver then mutates freely. The store writes, for each noted path, the entry as it stands at
commit time (or its deletion), so a change costs what it touched, not what the world holds.

The one rule for driver code: **mutate an entry only after fetching it by key** (``[k]``,
``get``, ``setdefault``, ``pop``, assignment, ``del``). Scans (``items()``, ``values()``, iteration)
hand out entries without noting them, so reading a whole site per call (the NIC owners of
``grant_ips``) does not make every VM part of the change. ``FA_SIM_VERIFY_CHANGES=1`` makes every
commit re-read the file whole and compare it with the state in memory, so a test suite run with it
(``tests/conftest.py`` sets it) finds a mutation that broke the rule.

A noted entry that was only read is written unchanged: harmless, and still bounded by the call.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, MutableMapping, ValuesView
from typing import Any

Path = tuple[str, ...]
Node = dict[str, Any] | None
"""A schema node: ``None`` is an entry; a dict maps a key (or ``"*"``, any key) to the node below."""

_ENTRY: Node = None
SCHEMA: dict[str, Any] = {
    "sites": {"*": _ENTRY},
    "networks": {"*": {"*": _ENTRY}},
    "pools": {"*": {"*": _ENTRY}},
    "grants": {"*": {"*": {"*": _ENTRY}}},
    "vms": {"*": {"*": _ENTRY}},
    "replications": {"*": _ENTRY},
    "failover": {"*": {"*": _ENTRY}},
    "dns": {"*": {"*": {"*": _ENTRY}}},
    "routers": {"*": {"routes": {"*": _ENTRY}}},  # a router's other keys (its site) are entries
    # "sim" (latency, fault counters) and "inventory_sha256" are entries of their own.
}


def _below(node: dict[str, Any], key: str) -> Node:
    return node[key] if key in node else node.get("*")


class Tracked(MutableMapping[str, Any]):
    """A container of the state (the whole state, a site's VMs, a pool's grants ...) that notes
    the entries reached through it in ``touched``."""

    __slots__ = ("_node", "_path", "_raw", "touched")

    def __init__(self, raw: dict[str, Any], path: Path = (), node: dict[str, Any] | None = None,
                 touched: set[Path] | None = None) -> None:
        self._raw = raw
        self._path = path
        self._node = SCHEMA if node is None else node
        self.touched: set[Path] = set() if touched is None else touched

    @property
    def raw(self) -> dict[str, Any]:
        return self._raw

    def _wrap(self, key: str, value: Any, note: bool) -> Any:
        node = _below(self._node, key)
        if node is None or not isinstance(value, dict):
            if note:
                self.touched.add((*self._path, key))
            return value
        return Tracked(value, (*self._path, key), node, self.touched)

    def __getitem__(self, key: str) -> Any:
        return self._wrap(key, self._raw[key], True)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._raw:
            return self._wrap(key, self._raw[key], True)
        return default

    def __setitem__(self, key: str, value: Any) -> None:
        self._raw[key] = value._raw if isinstance(value, Tracked) else value
        self.touched.add((*self._path, key))

    def __delitem__(self, key: str) -> None:
        del self._raw[key]
        self.touched.add((*self._path, key))

    def pop(self, key: str, *default: Any) -> Any:
        if key in self._raw:
            self.touched.add((*self._path, key))
        return self._raw.pop(key, *default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self._raw:
            self[key] = default
        return self[key]

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __eq__(self, other: object) -> bool:
        return self._raw == (other._raw if isinstance(other, Tracked) else other)

    __hash__ = None  # type: ignore[assignment]  # a mutable mapping, like dict

    def keys(self) -> KeysView[str]:
        return self._raw.keys()

    def items(self) -> ItemsView[str, Any]:
        if self._node.keys() == {"*"} and self._node["*"] is None:
            return self._raw.items()  # entries: handed out as they are, not noted (module docstring)
        return _Items(self)  # containers: wrapped, so what is changed through them is noted

    def values(self) -> ValuesView[Any]:
        if self._node.keys() == {"*"} and self._node["*"] is None:
            return self._raw.values()
        return _Values(self)

    def __repr__(self) -> str:
        return f"Tracked({self._path!r}, {len(self._raw)} keys)"


class _Items(ItemsView[str, Any]):
    _mapping: Tracked

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        m = self._mapping
        for key, value in m.raw.items():
            yield key, m._wrap(key, value, False)


class _Values(ValuesView[Any]):
    _mapping: Tracked

    def __iter__(self) -> Iterator[Any]:
        m = self._mapping
        for key, value in m.raw.items():
            yield m._wrap(key, value, False)


def changes(state: dict[str, Any], touched: set[Path]) -> list[tuple[Any, ...]]:
    """What to write for ``touched``: ``(path, value)`` for an entry that is there now,
    ``(path,)`` for one that is not. A path under another touched path goes with it."""

    ops: list[tuple[Any, ...]] = []
    for path in sorted(touched, key=len):
        if any(path[:i] in touched for i in range(1, len(path))):
            continue
        here: Any = state
        for key in path[:-1]:
            here = here.get(key) if isinstance(here, dict) else None
            if here is None:
                break
        if isinstance(here, dict) and path[-1] in here:
            ops.append((path, here[path[-1]]))
        else:
            ops.append((path,))
    return ops


def apply(state: dict[str, Any], ops: list[tuple[Any, ...]]) -> None:
    """Replays :func:`changes` (read back from the file) onto ``state``."""

    for op in ops:
        path = op[0]
        here = state
        if len(op) == 2:
            for key in path[:-1]:
                here = here.setdefault(key, {})
            here[path[-1]] = op[1]
            continue
        for key in path[:-1]:
            nxt = here.get(key)
            if not isinstance(nxt, dict):
                break
            here = nxt
        else:
            here.pop(path[-1], None)
