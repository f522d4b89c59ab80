"""Work items (per VM, NIC and static IP configuration) and the collector of refusals and notes.

The collector turns what the planner finds into few, readable lines however many VMs share them.

Work items are mutable on purpose: each seam of planning fills in its part (the pool, then the
address, then the test address) and the changes are read off them at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from agent.config import NetworkMapping
from agent.domain.model import Isolation, Nic, Replication, StaticIpPool, VirtualMachine, VmNetwork
from agent.domain.plan import PlannedVm

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MappingUse:
    """A network mapping as one source network uses it: forward, or in reverse for a failback
    (the network is the mapping's target; the mapping's source is where it goes back to)."""

    index: int
    """Its position in ``network_mappings``: how refusals and notes name it."""
    mapping: NetworkMapping
    reverse: bool


@dataclass(slots=True, eq=False)
class Slot:
    """One static IP configuration of one NIC: what it had, what it will get."""

    key: tuple[int, int, int]
    nic: NicWork
    ip_index: int
    version: int
    source: str
    source_int: int
    strategy: str
    pool: StaticIpPool | None = None
    address: str | None = None
    existing: bool = False
    retained: bool = False
    """The replica stays in the source address's subnet (retain, and the pool covers it)."""
    test_pool: StaticIpPool | None = None
    test_address: str | None = None
    test_existing: bool = False
    override: str | None = None
    """The operator's failover address for this slot (``address_overrides``), if any."""
    test_override: str | None = None

    @property
    def label(self) -> str:
        return f"{self.nic.vm.name}/{self.nic.name}#{self.ip_index}"


@dataclass(slots=True, eq=False)
class TestTarget:
    """Where test VMs of one mapping connect."""

    mode: str
    name: str = ""
    """Empty only with mode ``none``."""
    network: VmNetwork | None = None
    """None with mode ``create``: the network does not exist yet (planned copy)."""
    isolation: Isolation | None = None
    usable: bool = True


@dataclass(slots=True, eq=False)
class NicWork:
    vm: VmWork
    name: str
    pos: int
    replica_nic: Nic
    mapping: MappingUse
    target: VmNetwork
    target_subnet: str
    slots: list[Slot] = field(default_factory=list)
    test: TestTarget | None = None
    test_subnet: str = ""
    test_nic: Nic | None = None

    @property
    def label(self) -> str:
        return f"{self.vm.name}/{self.name}"


@dataclass(slots=True, eq=False)
class VmWork:
    name: str
    pos: int
    planned: PlannedVm
    primary: VirtualMachine
    replica: VirtualMachine
    replication: Replication
    test_vm: str
    nics: list[NicWork] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Group(Generic[T]):
    build: Callable[[list[str]], T | None]
    items: list[str]


class Collector(Generic[T]):
    """Refusals or notes in discovery order. A grouped entry is built once at the end from
    every item (NIC, VM) it concerns, so 10,000 VMs on one unmapped network make one line
    that names them, not 10,000 lines; equal single entries are kept once."""

    def __init__(self, identity: Callable[[T], Hashable] = lambda e: e) -> None:
        self._entries: list[T | _Group[T]] = []
        self._groups: dict[Hashable, _Group[T]] = {}
        self._seen: set[Hashable] = set()
        self._identity = identity

    def add(self, entry: T) -> None:
        key = self._identity(entry)
        if key not in self._seen:
            self._seen.add(key)
            self._entries.append(entry)

    def group(self, key: Hashable, build: Callable[[list[str]], T | None], item: str) -> None:
        """Adds ``item`` to the entry ``key``; the first ``build`` given for a key makes it (None: no entry)."""
        entry = self._groups.get(key)
        if entry is None:
            entry = self._groups[key] = _Group(build, [])
            self._entries.append(entry)
        entry.items.append(item)

    def build(self) -> list[T]:
        out: list[T] = []
        for e in self._entries:
            r = e.build(e.items) if isinstance(e, _Group) else e
            if r is not None:
                out.append(r)
        return out
