"""A Plan: everything a failover will change, computed before anything changes.

A Plan is an immutable value -- a sorted tuple of typed changes -- produced by the pure function
``agent.domain.planning.build_plan`` from inventory and config. It renders as a one-line summary
("reserve=12 set-ip=12 routes=2 dns=9"), a human-readable diff and a JSON form, and carries a
checksum so an operation can be pinned to the exact plan an operator reviewed.

Kinds: ``test`` (test failover: test networks, test addresses, test DNS only), ``planned`` and
``unplanned`` (real failover: reservations, failover IPs, routes, production DNS).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from agent.domain.model import FailoverIpSetting, RecordType, Route

PlanKind = Literal["test", "planned", "unplanned"]
PLAN_KINDS: tuple[PlanKind, ...] = ("test", "planned", "unplanned")


@dataclass(frozen=True, slots=True)
class ReserveIp:
    """Reserve ``address`` in the target pool for one IP configuration of a replica (or test) NIC
    (``Grant-SCIPAddress``). ``existing`` says the grant is already there and will be reused."""

    kind: ClassVar[str] = "reserve"
    site: str
    pool: str
    address: str
    vm: str
    nic: str
    nic_id: str
    ip_index: int
    """Which IP configuration of the NIC (0 = primary)."""
    purpose: Literal["failover", "test"] = "failover"
    source_address: str | None = None
    existing: bool = False

    @property
    def sort_key(self) -> tuple:
        return (self.vm, self.nic, self.ip_index, self.purpose)


@dataclass(frozen=True, slots=True)
class ConnectNic:
    """Connect a replica (or test) NIC to its target VM network and subnet (the mapping rule:
    the subnet with the source subnet's name, else the first)."""

    kind: ClassVar[str] = "connect"
    site: str
    vm: str
    nic: str
    vm_network: str
    vm_subnet: str
    purpose: Literal["failover", "test"] = "failover"
    addresses: tuple[tuple[str, int], ...] = ()
    """For test VMs: static (address, prefix length) set through VMM. Empty: DHCP / failover IP."""

    @property
    def sort_key(self) -> tuple:
        return (self.vm, self.nic, 0, self.purpose)


@dataclass(frozen=True, slots=True)
class SetFailoverIp:
    """Set the failover TCP/IP configuration of a replica NIC on its Hyper-V host, just before
    failover (``Set-VMNetworkAdapterFailoverConfiguration``). One setting per IP configuration."""

    kind: ClassVar[str] = "set-ip"
    site: str
    host: str
    vm: str
    nic: str
    settings: tuple[FailoverIpSetting, ...]
    previous: tuple[FailoverIpSetting, ...] = ()
    """What was configured before (empty: nothing), kept for the diff and for rollback."""

    @property
    def sort_key(self) -> tuple:
        return (self.vm, self.nic, 0, "failover")


@dataclass(frozen=True, slots=True)
class CreateTestNetwork:
    """Create an isolated WNV VM network copying ``copy_of``'s subnets and pools (test failover
    option "create automatically"); deleted again by the test cleanup."""

    kind: ClassVar[str] = "test-network"
    site: str
    name: str
    copy_of: str

    @property
    def sort_key(self) -> tuple:
        return ("", self.name, 0, "test")


@dataclass(frozen=True, slots=True)
class MoveRoute:
    """Move a whole subnet: withdraw its routes at the old site, announce them at the new one,
    repoint third-site routers."""

    kind: ClassVar[str] = "route"
    prefix: str
    from_site: str
    to_site: str
    withdraw: tuple[Route, ...]
    announce: tuple[Route, ...]

    @property
    def sort_key(self) -> tuple:
        return ("", self.prefix, 0, "")


@dataclass(frozen=True, slots=True)
class DnsChange:
    """Replace one record set (A, AAAA or PTR). ``old_values`` is what the agent expects to find
    (empty: must not exist); ``new_values`` empty deletes the record set."""

    kind: ClassVar[str] = "dns"
    server: str
    zone: str
    name: str
    type: RecordType
    ttl: int
    old_values: tuple[str, ...]
    new_values: tuple[str, ...]
    vm: str
    purpose: Literal["failover", "test"] = "failover"
    old_ttl: int | None = None

    @property
    def sort_key(self) -> tuple:
        return (self.vm, self.name, 1, self.type)


Change = ReserveIp | ConnectNic | SetFailoverIp | CreateTestNetwork | MoveRoute | DnsChange
CHANGE_TYPES: tuple[type, ...] = (CreateTestNetwork, ReserveIp, ConnectNic, SetFailoverIp, MoveRoute, DnsChange)
_ORDER = {t.kind: i for i, t in enumerate(CHANGE_TYPES)}


@dataclass(frozen=True, slots=True)
class PlannedVm:
    """One VM of the plan: where it fails over from and to, and in which group."""

    name: str
    group: str
    group_index: int
    source_site: str
    source_host: str
    target_site: str
    target_host: str
    self_registering: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """What one failover of one recovery plan will change. Compare by :meth:`checksum`."""

    plan: str
    kind: PlanKind
    source_site: str
    target_site: str
    vms: tuple[PlannedVm, ...]
    changes: tuple[Change, ...]
    notes: tuple[str, ...] = ()
    """Things the operator should know that change nothing (DHCP NICs left alone, ...)."""
    _checksum: list[str] = field(default_factory=list, compare=False, repr=False)

    @staticmethod
    def sort_changes(changes: list[Change] | tuple[Change, ...]) -> tuple[Change, ...]:
        return tuple(sorted(changes, key=lambda c: (_ORDER[c.kind], c.sort_key, _canonical(change_to_json(c)))))

    def of(self, change_type: type) -> list:
        return [c for c in self.changes if isinstance(c, change_type)]

    def for_vm(self, vm: str) -> list[Change]:
        return [c for c in self.changes if getattr(c, "vm", None) == vm]

    def counts(self) -> dict[str, int]:
        counts = {t.kind: 0 for t in CHANGE_TYPES}
        for c in self.changes:
            if isinstance(c, ReserveIp) and c.existing:
                continue  # a reused grant changes nothing
            counts[c.kind] += 1
        return counts

    def summary(self) -> str:
        c = self.counts()
        parts = [f"{self.kind} failover of plan {self.plan}: {self.source_site} -> {self.target_site}",
                 f"vms={len(self.vms)}"]
        parts += [f"{k}={v}" for k, v in c.items() if v or k in ("reserve", "set-ip", "route", "dns")]
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "kind": self.kind,
            "source_site": self.source_site,
            "target_site": self.target_site,
            "summary": self.summary(),
            "counts": self.counts(),
            "checksum": self.checksum(),
            "vms": [asdict(v) for v in self.vms],
            "changes": [change_to_json(c) for c in self.changes],
            "notes": list(self.notes),
        }

    def checksum(self) -> str:
        if not self._checksum:
            body = {
                "plan": self.plan, "kind": self.kind, "source_site": self.source_site,
                "target_site": self.target_site, "vms": [asdict(v) for v in self.vms],
                "changes": [change_to_json(c) for c in self.changes],
            }
            self._checksum.append("sha256:" + hashlib.sha256(_canonical(body).encode()).hexdigest())
        return self._checksum[0]


def change_to_json(change: Change) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": change.kind}
    for name in change.__dataclass_fields__:
        value = getattr(change, name)
        out[name] = _jsonable(value)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
