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
from typing import Any, ClassVar, Literal, assert_never

from agent.domain.model import FailoverIpSetting, RecordType, Route, name_test_vm

PlanKind = Literal["test", "planned", "unplanned"]
PLAN_KINDS: tuple[PlanKind, ...] = ("test", "planned", "unplanned")
Purpose = Literal["failover", "test"]
"""What a change serves: the real failover, or a test failover (test VM, test network, test DNS)."""


@dataclass(frozen=True, slots=True)
class ReserveIp:
    """Reserve ``address`` in the target pool for one IP configuration of a replica (or test) NIC
    (``Grant-SCIPAddress``). ``existing`` says the grant is already there and will be reused.

    With ``purpose="test"`` the owner is the NIC of ``vm``'s test VM (``"<vm> - Test"``, see
    :func:`name_test_vm`); ``vm`` still names the VM itself. The test VM exists only once the
    test failover has started, so ``nic_id`` is ``""`` until then and the engine fills it in
    from the test VM's NIC of the same name before granting."""

    kind: ClassVar[str] = "reserve"
    site: str
    pool: str
    address: str
    vm: str
    nic: str
    nic_id: str
    ip_index: int
    """Which IP configuration of the NIC (0 = primary)."""
    purpose: Purpose = "failover"
    source_address: str | None = None
    existing: bool = False
    override: bool = False
    """The address is the operator's (``address_overrides``): reserved exactly, never swapped."""

    @property
    def sort_key(self) -> tuple:
        return (self.vm, self.nic, self.ip_index, self.purpose)


@dataclass(frozen=True, slots=True)
class ConnectNic:
    """Connect a replica (or test) NIC to its target VM network and subnet (the mapping rule:
    the subnet with the source subnet's name, else the first). With ``purpose="test"`` it is the
    NIC of ``vm``'s test VM (``"<vm> - Test"``) that is connected, to the test network."""

    kind: ClassVar[str] = "connect"
    site: str
    vm: str
    nic: str
    vm_network: str
    vm_subnet: str
    purpose: Purpose = "failover"
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
    purpose: Purpose = "failover"
    old_ttl: int | None = None

    @property
    def sort_key(self) -> tuple:
        return (self.vm, self.name, 1, self.type)


Change = ReserveIp | ConnectNic | SetFailoverIp | CreateTestNetwork | MoveRoute | DnsChange
CHANGE_TYPES: tuple[type[Change], ...] = (CreateTestNetwork, ReserveIp, ConnectNic, SetFailoverIp, MoveRoute, DnsChange)
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
    recovery_point: str | None = None
    """The replica snapshot the VM fails over to (``Start-VMFailover -VMRecoverySnapshot``);
    None: its latest state."""
    recovery_point_at: str | None = None
    """When that snapshot was taken (ISO 8601, UTC), for the operator to read."""
    recovery_point_app_consistent: bool = False


def vm_to_json(vm: PlannedVm) -> dict[str, Any]:
    """A planned VM's JSON form; the recovery-point fields only when a point is chosen, so the
    checksums of plans stored before they existed still match."""
    out = asdict(vm)
    if vm.recovery_point is None:
        for name in ("recovery_point", "recovery_point_at", "recovery_point_app_consistent"):
            del out[name]
    return out


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
    excluded: tuple[tuple[str, str], ...] = ()
    """(VM, why): VMs of the recovery plan an unplanned failover leaves out, their state unreadable."""
    recovery_point: str = "latest"
    """The recovery-point choice (``latest``, ``latest_app_consistent`` or a snapshot name); what
    it resolved to per VM is in ``vms``."""
    _checksum: list[str] = field(default_factory=list, compare=False, repr=False)

    @staticmethod
    def sort_changes(changes: list[Change] | tuple[Change, ...]) -> tuple[Change, ...]:
        # Ordered by (type, sort_key, canonical JSON). The JSON form only breaks ties, and
        # rendering it costs more than everything else in planning, so it is computed for the
        # (few) runs of changes whose (type, sort_key) are equal -- the result is the same.
        keyed = sorted(((_ORDER[c.kind], c.sort_key, c) for c in changes), key=lambda t: t[:2])
        out: list[Change] = []
        i, n = 0, len(keyed)
        while i < n:
            head = keyed[i][:2]
            j = i + 1
            while j < n and keyed[j][:2] == head:
                j += 1
            if j - i == 1:
                out.append(keyed[i][2])
            else:
                out.extend(sorted((t[2] for t in keyed[i:j]), key=lambda c: _canonical(change_to_json(c))))
            i = j
        return tuple(out)

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
            "vms": [vm_to_json(v) for v in self.vms],
            "changes": [change_to_json(c) for c in self.changes],
            "recovery_point": self.recovery_point,
            "notes": list(self.notes),
            "excluded": [list(e) for e in self.excluded],
        }

    def checksum(self) -> str:
        if not self._checksum:
            body = {
                "plan": self.plan, "kind": self.kind, "source_site": self.source_site,
                "target_site": self.target_site, "vms": [vm_to_json(v) for v in self.vms],
                "changes": [change_to_json(c) for c in self.changes],
            }
            if self.excluded:  # only then: the checksums of plans stored before it stay valid
                body["excluded"] = [list(e) for e in self.excluded]
            if self.recovery_point != "latest":  # likewise
                body["recovery_point"] = self.recovery_point
            self._checksum.append("sha256:" + hashlib.sha256(_canonical(body).encode()).hexdigest())
        return self._checksum[0]


def change_to_json(change: Change) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": change.kind}
    for name in change.__dataclass_fields__:
        value = getattr(change, name)
        if name in _OMITTED_WHEN_FALSE and not value:
            continue
        out[name] = _jsonable(value)
    return out


_OMITTED_WHEN_FALSE = frozenset({"override"})
"""Fields added after plans were first stored: left out at their default, so a stored plan's
checksum still matches when it is read back."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# ------------------------------------------------------------------------------ naming

def name_test_network(target_network: str, plan: str) -> str:
    """The auto-created test network copying ``target_network`` for recovery plan ``plan``:
    deterministic, so planning again finds the network a previous run created."""
    return f"{target_network}-test-{plan}"


# ------------------------------------------------------------------------------- diff


def render_diff(plan: Plan) -> str:
    """The plan as a site admin reads it: global changes (test networks, routes), then per
    recovery-plan group and VM every connection, reservation (pool, address, reused or new,
    kept or changed from), failover IP (before -> after) and DNS change (old -> new, TTL), then
    the notes, and the summary line last.

    Markers: ``+`` adds, ``-`` removes, ``~`` replaces, ``=`` reuses what exists.
    """
    out: list[str] = [f"{plan.kind} failover of plan {plan.plan}: {plan.source_site} -> {plan.target_site}",
                      f"checksum {plan.checksum()}"]
    if plan.recovery_point != "latest":
        out.append(f"recovery point: {plan.recovery_point} (each VM's below)")
    by_vm: dict[str, list[Change]] = {}
    names = {v.name for v in plan.vms}
    unowned: list[Change] = []
    networks = [c for c in plan.changes if isinstance(c, CreateTestNetwork)]
    routes = [c for c in plan.changes if isinstance(c, MoveRoute)]
    for c in plan.changes:
        if isinstance(c, (CreateTestNetwork, MoveRoute)):
            continue
        if c.vm in names:
            by_vm.setdefault(c.vm, []).append(c)
        else:
            unowned.append(c)

    if networks:
        out += ["", "test networks:"]
        out += [f"  + create {c.name} at {c.site} (isolated copy of {c.copy_of})" for c in networks]

    groups: dict[tuple[int, str], list[PlannedVm]] = {}
    for v in plan.vms:
        groups.setdefault((v.group_index, v.group), []).append(v)
    for (index, group), vms in sorted(groups.items()):
        out += ["", f"group {index + 1} {group!r} ({len(vms)} VM{'s' if len(vms) != 1 else ''}):"]
        for v in vms:
            extra = " [registers itself in DNS]" if v.self_registering else ""
            out.append(f"  VM {v.name}: {v.source_site} ({v.source_host}) -> {v.target_site} ({v.target_host}){extra}")
            if v.recovery_point is not None:
                consistency = "application-consistent" if v.recovery_point_app_consistent else "crash-consistent"
                out.append(f"    recovery point {v.recovery_point} (taken {v.recovery_point_at}, {consistency})")
            changes = sorted(by_vm.get(v.name, []), key=_display_rank)
            if not changes:
                out.append("    nothing to do")
            out += ["    " + line for c in changes for line in _describe(c)]

    if unowned:
        out += ["", "other changes:"]
        out += ["  " + line for c in unowned for line in _describe(c)]
    if routes:
        out += ["", "routes:"]
        out += ["  " + line for c in routes for line in _describe(c)]
    if plan.notes:
        out += ["", "notes:"]
        out += [f"  - {n}" for n in plan.notes]
    out += ["", plan.summary()]
    return "\n".join(out) + "\n"


def _display_rank(c: Change) -> tuple[int, int]:
    # Within a VM, read in the order things happen: connect, reserve, failover IP, DNS
    # (forward records before PTR). Stable, so the plan's own order holds within a rank.
    if isinstance(c, ConnectNic):
        return (0, 0)
    if isinstance(c, ReserveIp):
        return (1, 0)
    if isinstance(c, SetFailoverIp):
        return (2, 0)
    if isinstance(c, DnsChange):
        return (3, 1 if c.type == RecordType.PTR else 0)
    return (4, 0)


def _describe(c: Change) -> list[str]:
    if isinstance(c, ReserveIp):
        where = f"{c.nic} ip {c.ip_index}"
        who = f"test VM {name_test_vm(c.vm)} " if c.purpose == "test" else ""
        how = "= reuse existing grant" if c.existing else "+ reserve"
        if c.source_address is None:
            origin = ""
        elif c.source_address == c.address:
            origin = ", kept"
        else:
            origin = f", changed from {c.source_address}"
        if c.override:
            origin += ", from an address override"
        return [f"{how} {c.address} in pool {c.pool} at {c.site} for {who}{where}{origin}"]
    if isinstance(c, ConnectNic):
        target = f"network {c.vm_network} subnet {c.vm_subnet or '(none)'}"
        if c.purpose == "test":
            addrs = ", ".join(f"{a}/{p}" for a, p in c.addresses) or "DHCP"
            return [f"~ connect test VM {name_test_vm(c.vm)} {c.nic} to {target} at {c.site} with {addrs}"]
        return [f"~ connect replica {c.nic} to {target} at {c.site}"]
    if isinstance(c, SetFailoverIp):
        before = "; ".join(_setting(s) for s in c.previous) or "(none)"
        after = "; ".join(_setting(s) for s in c.settings) or "(none)"
        return [f"~ failover IP of {c.nic} on {c.host}: {before} -> {after}"]
    if isinstance(c, DnsChange):
        old = ", ".join(c.old_values) or "(none)"
        new = ", ".join(c.new_values) or "(delete)"
        if not c.new_values:
            ttl = ""  # a deleted record set has no TTL to speak of
        elif c.old_ttl is not None and c.old_ttl != c.ttl:
            ttl = f" (ttl {c.old_ttl} -> {c.ttl})"
        else:
            ttl = f" (ttl {c.ttl})"
        mark = "+" if not c.old_values else "-" if not c.new_values else "~"
        scope = " (test DNS)" if c.purpose == "test" else ""
        return [f"{mark} dns {c.type.value} {c.name} in zone {c.zone} on {c.server}{scope}: {old} -> {new}{ttl}"]
    if isinstance(c, MoveRoute):
        lines = [f"~ move {c.prefix}: {c.from_site} -> {c.to_site}"]
        lines += [f"    - withdraw on {r.router}: {_route(r)}" for r in c.withdraw]
        lines += [f"    + announce on {r.router}: {_route(r)}" for r in c.announce]
        return lines
    if isinstance(c, CreateTestNetwork):
        return [f"+ create test network {c.name} at {c.site} (copy of {c.copy_of})"]
    assert_never(c)


def _setting(s: FailoverIpSetting) -> str:
    text = f"{s.address}/{s.prefix_length}"
    if s.gateway:
        text += f" gw {s.gateway}"
    if s.dns_servers:
        text += " dns " + ",".join(s.dns_servers)
    return text


def _route(r: Route) -> str:
    if r.announced_network:  # a BGP custom route: no next hop, no metric
        return f"{r.prefix} (announced network)"
    via = f"via {r.next_hop}" if r.next_hop else f"dev {r.interface}"
    return f"{r.prefix} {via} metric {r.metric}"


def ttl_lowering(plan: Plan, failover_ttl: int) -> tuple[list[DnsChange], int]:
    """The TTL choreography ahead of a planned failover: which existing forward records the plan
    will change get their TTL lowered to ``failover_ttl`` first (values unchanged), and how long
    to wait afterwards -- the longest old TTL, so no resolver still caches an old answer for
    longer than the new TTL once the addresses change."""

    lowered = [
        DnsChange(server=c.server, zone=c.zone, name=c.name, type=c.type, ttl=failover_ttl,
                  old_values=c.old_values, new_values=c.old_values, vm=c.vm, purpose=c.purpose, old_ttl=c.old_ttl)
        for c in plan.of(DnsChange)
        if c.type in ("A", "AAAA") and c.old_values and c.old_values != c.new_values
        and c.old_ttl is not None and c.old_ttl > failover_ttl
    ]
    return lowered, max((c.old_ttl or 0 for c in lowered), default=0)
