"""From a Plan to the journalled steps of each operation kind.

The step list is a pure function of the plan, the config and, for follow-up operations, the id
of the operation followed up (:func:`steps_for`): computed once when the operation is created
and stored with it, and computed again when it is resumed, to check the journal still says
what this agent would do.

Batching for recovery time: within a group, every action becomes one step per target host (or
site VMM, DNS zone, router) carrying all the group's items, so a group of 100 VMs on 4 hosts
costs 4 round trips per action, not 100. A step declares the steps it needs (the failovers:
:func:`failover_steps`, :func:`test_failover_steps`) and starts as soon as they have finished;
the other kinds keep the stage barrier (every step of the previous stage).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from agent.config import AgentConfig
from agent.domain.model import RecordType, ReplicationState, name_test_vm
from agent.domain.plan import (
    ConnectNic,
    CreateTestNetwork,
    DnsChange,
    MoveRoute,
    Plan,
    PlannedVm,
    ReserveIp,
    SetFailoverIp,
    ttl_lowering,
)
from agent.domain.planning.dns import host_name, ptr_name
from agent.engine.model import OperationKind, StepSpec
from agent.engine.steps import (
    AddressSource,
    AwaitFailoverArgs,
    AwaitItem,
    ConnectArgs,
    ConnectItem,
    CreateTestNetworksArgs,
    DeleteTestNetworksArgs,
    DnsApplyArgs,
    DnsRestoreArgs,
    FailoverIpItem,
    HostVmItem,
    LeftOutArgs,
    LeftOutItem,
    ManualArgs,
    NamedItem,
    NicItem,
    PlannedSetting,
    PowerArgs,
    RecordItem,
    ReplicateArgs,
    ReserveArgs,
    ReserveItem,
    RestoreFailoverArgs,
    RestoreRoutesArgs,
    RevokeTestGrantsArgs,
    RouteArgs,
    RouteItem,
    ScriptArgs,
    SetFailoverArgs,
    StepArgs,
    TestNetworkItem,
    WaitTtlArgs,
)
from agent.ports import PowerAction, ReplicaAction

FAILED_OVER = (ReplicationState.FAILED_OVER_WAITING_COMPLETION.value, ReplicationState.FAILED_OVER.value)

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

K = TypeVar("K", bound="SupportsRichComparison")
T = TypeVar("T")


@dataclass
class Steps:
    """Steps in the making: each :meth:`add_stage` is one stage (its display order, and the
    priority among steps ready at once)."""

    steps: list[StepSpec] = field(default_factory=list)
    stage: int = 0

    def add_stage(self, specs: Iterable[StepSpec | None], needs: Iterable[str] | None = None,
                  each: str | None = None) -> list[str]:
        """Add a stage. Its steps need ``needs`` and, per step, the step named ``each`` with
        ``{host}`` the step's host, if there is one; neither given: the needs the specs carry
        (by default the stage barrier). Returns the names added."""
        known = {s.name for s in self.steps} if each else set()
        staged = [replace(s, stage=self.stage, needs=s.needs if needs is None and each is None else tuple(sorted(
            {*(needs or ()), *({each.format(host=_host_of(s))} & known if each else set())})))
            for s in specs if s is not None]
        if staged:
            self.steps += staged
            self.stage += 1
        return [s.name for s in staged]


def _host_of(spec: StepSpec) -> str:
    """The host of a per-host step (named ``group/label/host``)."""
    return spec.name.rsplit("/", 1)[1]


def by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """``items`` grouped by ``key``, groups in sorted key order (a stable step order)."""
    out: dict[K, list[T]] = defaultdict(list)
    for it in items:
        out[key(it)].append(it)
    return {k: out[k] for k in sorted(out)}


def step(name: str, action: str, target: str | None, args: StepArgs, group: str | None = None) -> StepSpec:
    """A step of the stage being built (:meth:`Steps.add_stage` sets its stage)."""
    return StepSpec(name=name, action=action, stage=0, target=target, args=args, group=group)


def _reserve_items(changes: list[ReserveIp], *, test: bool) -> tuple[ReserveItem, ...]:
    return tuple(ReserveItem(
        key=f"{c.vm}/{c.nic}/{c.ip_index}/{c.purpose}", vm=c.vm, nic=c.nic, nic_id=c.nic_id,
        owner_vm=name_test_vm(c.vm) if test else c.vm, pool=c.pool, address=c.address, ip_index=c.ip_index,
        purpose=c.purpose,
        # A retained source address or an operator's override must be exactly that address; any
        # other was a free choice.
        flexible=c.address != c.source_address and not c.override,
    ) for c in changes)


def _connect_items(changes: list[ConnectNic]) -> tuple[ConnectItem, ...]:
    return tuple(ConnectItem(
        key=f"{c.vm}/{c.nic}/{c.purpose}", vm=c.vm, nic=c.nic, purpose=c.purpose,
        target_vm=name_test_vm(c.vm) if c.purpose == "test" else c.vm,
        vm_network=c.vm_network, vm_subnet=c.vm_subnet, addresses=tuple(c.addresses),
    ) for c in changes)


def _setip_items(changes: list[SetFailoverIp], reserves: list[ReserveIp]) -> tuple[FailoverIpItem, ...]:
    index = {(r.vm, r.nic, r.address): r.ip_index for r in reserves}
    return tuple(FailoverIpItem(key=f"{c.vm}/{c.nic}", vm=c.vm, nic=c.nic, settings=tuple(
        PlannedSetting(**s.model_dump(), ip_index=index.get((c.vm, c.nic, s.address), -1 - i))
        for i, s in enumerate(c.settings))) for c in changes)


class _Sources:
    """Which values of the planned records are addresses the operation reserves: the DNS steps
    write what VMM granted for them (it may differ from the plan), never the plan's guess."""

    def __init__(self, config: AgentConfig, reserves: Iterable[ReserveIp]) -> None:
        mine = [r for r in reserves if not r.existing]
        self.forward = {(r.vm, r.address, r.purpose): r for r in mine}
        self.reverse = {(ptr_name(r.address), host, r.purpose): r for r in mine
                        if (host := host_name(config, r.vm)) is not None}

    def of(self, c: DnsChange) -> tuple[AddressSource, ...]:
        found: list[tuple[ReserveIp | None, str | None]]
        if c.type == RecordType.PTR:
            added = sorted(set(c.new_values) - set(c.old_values))
            found = [(self.reverse.get((c.name, h, c.purpose)), h) for h in added]
        else:
            found = [(self.forward.get((c.vm, v, c.purpose)), None) for v in c.new_values]
        return tuple(AddressSource(vm=r.vm, nic=r.nic, ip_index=r.ip_index, purpose=r.purpose, planned=r.address,
                                   host=h) for r, h in found if r is not None)


def _dns_steps(group: str, changes: list[DnsChange], label: str,
               sources: _Sources | None = None) -> list[StepSpec | None]:
    return [step(f"{group}/{label}/{server}/{zone}", "dns.apply", f"dns:{server}", DnsApplyArgs(
        server=server, zone=zone, items=tuple(RecordItem(
            key=f"{c.name}/{c.type}", vm=c.vm, name=c.name, type=c.type.value, ttl=c.ttl,
            old_values=tuple(c.old_values), new_values=tuple(c.new_values),
            sources=sources.of(c) if sources else ()) for c in cs)), group)
        for (server, zone), cs in by(changes, lambda c: (c.server, c.zone)).items()]


def _host_items(vms: list[PlannedVm], target_vm: Callable[[PlannedVm], str],
                with_point: bool = False) -> tuple[HostVmItem, ...]:
    return tuple(HostVmItem(key=v.name, vm=v.name, target_vm=target_vm(v),
                            recovery_point=v.recovery_point if with_point else None) for v in vms)


def _same_vm(v: PlannedVm) -> str:
    return v.name


def _power_steps(group: str, label: str, site: str, vms: list[PlannedVm], host_of: Callable[[PlannedVm], str],
                 power: PowerAction, *, tolerate_unreachable: bool = False,
                 target_vm: Callable[[PlannedVm], str] = _same_vm,
                 restore_from: str | None = None) -> list[StepSpec | None]:
    return [step(f"{group}/{label}/{host}", "hyperv.power", host, PowerArgs(
        site=site, host=host, items=_host_items(vs, target_vm), power=power,
        tolerate_unreachable=tolerate_unreachable, restore_from=restore_from), group)
        for host, vs in by(vms, host_of).items()]


def _replicate_steps(group: str, label: str, site: str, vms: list[PlannedVm], host_of: Callable[[PlannedVm], str],
                     replica_action: ReplicaAction, *, to_fail_over_again: bool = False) -> list[StepSpec | None]:
    with_point = replica_action in ("failover", "start_test")
    return [step(f"{group}/{label}/{host}", "hyperv.replicate", host, ReplicateArgs(
        site=site, host=host, items=_host_items(vs, _same_vm, with_point), replica_action=replica_action,
        to_fail_over_again=to_fail_over_again), group)
        for host, vs in by(vms, host_of).items()]


def _source_host(v: PlannedVm) -> str:
    return v.source_host


def _target_host(v: PlannedVm) -> str:
    return v.target_host


def script_host(config: AgentConfig, plan: Plan, group: str, configured: str) -> str:
    """Where a group's script runs: the configured host when it is at the site the operation
    makes active (the plan's target), else -- a failback, whose target is the other site -- the
    host the group's first VM fails over to, so the script runs beside the VMs it is about."""
    site_of = {h.name: s.name for s in config.sites for h in s.hyperv_hosts}
    if site_of.get(configured, plan.target_site) == plan.target_site:
        return configured
    there = [v.target_host for v in plan.vms if v.group == group and site_of.get(v.target_host) == plan.target_site]
    there += [h.name for s in config.sites if s.name == plan.target_site for h in s.hyperv_hosts]
    return there[0] if there else configured


def script_context(plan: Plan, kind: OperationKind, group: str) -> dict[str, Any]:
    """The ``Context`` a recovery-plan script is given (powershell/README.md): the plan, the
    operation kind, its direction, and each VM's old and new addresses per NIC."""
    reserved = [r for r in plan.of(ReserveIp) if r.purpose == ("test" if kind == OperationKind.TEST_FAILOVER
                                                                 else "failover")]
    return {"plan": plan.plan, "kind": kind.value, "group": group,
            "direction": {"from": plan.source_site, "to": plan.target_site},
            "vms": [{"name": v.name, "group": v.group, "from_host": v.source_host, "to_host": v.target_host,
                     "addresses": [{"nic": r.nic, "old": r.source_address, "new": r.address}
                                   for r in reserved if r.vm == v.name]} for v in plan.vms]}


def _group_steps(b: Steps, config: AgentConfig, plan: Plan, group: str, kind: OperationKind,
                 when: Literal["before", "after"], needs: list[str] | None = None) -> list[str]:
    """A group's own script and manual steps, ``before`` anything of it changes or ``after`` its
    VMs are up (the recovery plan's order: the next group waits for them). One after the other,
    the first needing ``needs`` (``None``: the stage barrier). Returns their names."""
    rp = config.plan(plan.plan)
    g = next((g for g in rp.groups if g.name == group), None) if rp else None
    names: list[str] = []
    for i, each in enumerate((g.before if when == "before" else g.after) if g else []):
        wanted = None if needs is None else names[-1:] or needs
        if each.manual:
            names += b.add_stage([step(f"{group}/{when}/{i}/manual", "manual", None,
                                       ManualArgs(instruction=each.manual.instruction), group)], wanted)
        elif each.script:
            s = each.script
            host = script_host(config, plan, group, s.host)
            names += b.add_stage([step(f"{group}/{when}/{i}/script", "script", host, ScriptArgs(
                host=host, path=s.path, timeout_s=s.timeout_s, parameters=dict(s.parameters),
                context=script_context(plan, kind, group)), group)], wanted)
    return names


def _route_group(plan: Plan, move: MoveRoute, group_index: dict[str, int]) -> int:
    """A subnet moves once the last VM holding a retained address in it has failed over."""
    net = ipaddress.ip_network(move.prefix)
    indexes = [group_index[r.vm] for r in plan.of(ReserveIp)
               if r.source_address and r.address == r.source_address and ipaddress.ip_address(r.address) in net]
    return max(indexes) if indexes else max(group_index.values(), default=0)


def _route_stages(b: Steps, moves: list[MoveRoute], group: str, tolerate_old_site: bool, up: list[str],
                  last: dict[str, str]) -> list[str]:
    """Withdraw, then announce, the group's subnets: withdrawing needs ``up`` (the group's VMs
    failed over), announcing every withdrawal; each step also needs the one before it at its
    router (``last``, updated), so one router is changed by one step at a time, in plan order."""
    withdraw = [(r, m) for m in moves for r in m.withdraw]
    announce = [(r, m) for m in moves for r in m.announce]
    names: list[str] = []
    for label, action, pairs in (("withdraw", "routes.withdraw", withdraw), ("announce", "routes.announce", announce)):
        before = tuple(names or up)
        added = b.add_stage([replace(step(
            f"{group}/routes-{label}/{router}", action, f"router:{router}", RouteArgs(
                router=router,
                items=tuple(RouteItem(key=f"{r.prefix}@{r.router}", prefix=r.prefix, route=r) for r, _ in rs),
                tolerate_unreachable=tolerate_old_site and action == "routes.withdraw"), group),
            needs=(*before, *([last[router]] if router in last else [])))
            for router, rs in by(pairs, lambda p: p[0].router).items()])
        last.update((n.rsplit("/", 1)[1], n) for n in added)
        names += added
    return names


def _zone_of(spec: StepSpec) -> str:
    """The server and zone of a DNS step (named ``group/label/server/zone``)."""
    return "/".join(spec.name.split("/")[-2:])


def _dns_stage(b: Steps, specs: list[StepSpec | None], needs: list[str], last: dict[str, str]) -> list[str]:
    """A group's DNS steps: each needs ``needs`` and the step of an earlier group in the same
    zone (``last``, updated), so one zone is written by one step at a time, in plan order."""
    added = b.add_stage([replace(s, needs=(*needs, *([last[_zone_of(s)]] if _zone_of(s) in last else [])))
                         for s in specs if s is not None])
    for spec in b.steps[len(b.steps) - len(added):]:
        last[_zone_of(spec)] = spec.name
    return added


def _vmm_step(name: str, action: str, site: str, args: StepArgs, group: str | None = None) -> StepSpec:
    return step(name, action, f"vmm:{site}", args, group)


def failover_steps(config: AgentConfig, plan: Plan, kind: OperationKind) -> list[StepSpec]:
    """Planned, unplanned and failback failovers. Per group, in plan order: reserve, connect the
    replica NICs, [full: shut down the sources and prepare], set failover IPs, [full: fail over
    and start | network-only: wait for the orchestrator], move the subnets whose last VM has now
    failed over, update DNS, then the group's script/manual steps.

    What each step needs (it starts as soon as those have finished; everything else overlaps).
    Before the groups: the TTL lowering, its wait (``before/wait-old-ttl``) needing it, and
    ``left-out``, needing nothing. For group g:

    - its ``before:`` steps, one after the other, the first needing everything of group g-1
      (for the first group: everything before the groups). No step of g or of a later group
      starts before them: the *gate* of g is its last ``before:`` step, else g-1's gate (for
      the first group: ``left-out``).
    - reserve(g) needs the gate; connect(g) needs reserve(g). So the next groups' reservations
      and NIC connections are made while earlier groups fail over: they change the replicas'
      VMM side only, which nobody uses before the failover.
    - shutdown-source(g, h) needs connect(g) (a pool or NIC that fails stops the operation
      before a production VM goes down), every ``start`` and ``after:`` step of group g-1 (its
      VMs are up: the recovery plan's order is a promise) and the TTL wait.
      prepare(g, h) needs shutdown-source(g, h), the same source host's VMs (planned only).
    - set-failover-ip(g, T) needs connect(g) (it sets the granted addresses, on NICs connected
      as the grants say): it runs while the sources shut down.
    - failover(g, T) needs set-failover-ip(g, T), connect(g) and every prepare(g, *) -- unplanned:
      shutdown-source(g, *) -- of the group: a replica host holds VMs of several source hosts.
    - start(g, T) needs every failover(g, *): a failover stopped at an error starts none of the
      group's VMs, whichever host finished first. Network-only: ``await-failover`` (g) needs
      what shutdown-source would (the orchestrator fails the group over once told) and every
      set-failover-ip(g, *); it pauses the operation until the VMs are failed over.
    - routes-withdraw(g, r) needs the group's ``start`` steps (a subnet moves once its last VM
      has failed over); routes-announce(g, r) every withdrawal of g. DNS(g, zone) needs the
      group's ``start`` steps, not the routes. Each route step also needs the one before it at
      its router, each DNS step the one before it in its zone: one writer at a time, in order.
    - its ``after:`` steps, one after the other, the first needing everything of g.
    """

    full = config.agent.mode == "full"
    unplanned = kind == OperationKind.UNPLANNED_FAILOVER
    target = plan.target_site
    b = Steps()
    ttl_wait: list[str] = []
    if not unplanned and config.dns.ttl.lower_before_planned:
        lowered, wait_s = ttl_lowering(plan, config.dns.ttl.failover_ttl)
        lower = b.add_stage(_dns_steps("before", lowered, "lower-ttl"), [])
        if lowered:
            ttl_wait = b.add_stage([step("before/wait-old-ttl", "dns.wait_ttl", None,
                                         WaitTtlArgs(seconds=wait_s, key="before/wait-old-ttl"), "before")], lower)
    gate = b.add_stage([step("left-out", "left_out", None, LeftOutArgs(items=tuple(
        LeftOutItem(key=vm, vm=vm, reason=f"its Hyper-V state could not be read ({why})")
        for vm, why in plan.excluded))) if plan.excluded else None], [])
    group_index = {v.name: v.group_index for v in plan.vms}
    moves_by_group = by(plan.of(MoveRoute), lambda m: _route_group(plan, m, group_index))
    reserves = plan.of(ReserveIp)
    sources = _Sources(config, reserves)
    previous = [s.name for s in b.steps]  # everything of the group before (here: before the groups)
    previous_up = list(ttl_wait)  # what the next group's VMs wait for before they go down
    last_route: dict[str, str] = {}
    last_zone: dict[str, str] = {}
    for (gi, group), vms in by(plan.vms, lambda v: (v.group_index, v.group)).items():
        names = {v.name for v in vms}
        first = len(b.steps)
        gate = _group_steps(b, config, plan, group, kind, "before", previous)[-1:] or gate
        mine = [r for r in reserves if r.vm in names and not r.existing]
        vmm = b.add_stage([_vmm_step(f"{group}/reserve", "vmm.reserve", target, ReserveArgs(
            site=target, items=_reserve_items(mine, test=False)), group) if mine else None], gate) or gate
        conns = [c for c in plan.of(ConnectNic) if c.vm in names]
        vmm = b.add_stage([_vmm_step(f"{group}/connect", "vmm.connect", target, ConnectArgs(
            site=target, items=_connect_items(conns)), group) if conns else None], vmm) or vmm
        down = vmm + previous_up + gate
        stopped: list[str] = []
        if full:
            stopped = b.add_stage(_power_steps(group, "shutdown-source", plan.source_site, vms, _source_host, "stop",
                                               tolerate_unreachable=unplanned), down)
            if not unplanned:
                stopped = b.add_stage(_replicate_steps(group, "prepare", plan.source_site, vms, _source_host,
                                                       "prepare"), [], each=f"{group}/shutdown-source/{{host}}")
        setips = [c for c in plan.of(SetFailoverIp) if c.vm in names]
        set_ip = b.add_stage([step(f"{group}/set-failover-ip/{host}", "hyperv.set_failover", host, SetFailoverArgs(
            site=target, host=host, items=_setip_items(cs, reserves)), group)
            for host, cs in by(setips, lambda c: c.host).items()], vmm)
        if full:
            failed_over = b.add_stage(_replicate_steps(group, "failover", target, vms, _target_host, "failover"),
                                      vmm + stopped, each=f"{group}/set-failover-ip/{{host}}")
            up = b.add_stage(_power_steps(group, "start", target, vms, _target_host, "start"), failed_over)
        else:
            up = b.add_stage([step(f"{group}/await-failover", "hyperv.await_failover", None, AwaitFailoverArgs(
                site=target, states=FAILED_OVER,
                instruction="fail over {vms} to " + target + " with your orchestrator, then resume this operation",
                items=tuple(AwaitItem(key=v.name, vm=v.name, host=v.target_host) for v in vms)), group)],
                down + set_ip)
        _route_stages(b, moves_by_group.get(gi, []), group, unplanned, up, last_route)
        _dns_stage(b, _dns_steps(group, [c for c in plan.of(DnsChange) if c.vm in names], "dns", sources), up,
                   last_zone)
        after = _group_steps(b, config, plan, group, kind, "after", [s.name for s in b.steps[first:]])
        previous = [s.name for s in b.steps[first:]]
        previous_up = up + after + ttl_wait
    return b.steps


def prepare_steps(config: AgentConfig, plan: Plan) -> list[StepSpec]:
    """Protection time: reserve the planned addresses in the target pools (reusing grants)."""
    b = Steps()
    mine = [r for r in plan.of(ReserveIp) if not r.existing and r.purpose == "failover"]
    b.add_stage([_vmm_step("reserve", "vmm.reserve", plan.target_site, ReserveArgs(
        site=plan.target_site, items=_reserve_items(mine, test=False))) if mine else None])
    return b.steps


def test_failover_steps(config: AgentConfig, plan: Plan) -> list[StepSpec]:
    """Test failover: isolated networks, test VMs, test addresses, test DNS only. Production
    networks, failover IPs, routes and production DNS are never touched.

    What each step needs: ``create-test-networks`` nothing. For group g, in plan order:

    - its ``before:`` steps, one after the other, the first needing everything of group g-1
      (for the first group: the test networks); the gate of g as in :func:`failover_steps`.
    - start-test(g, T) (network-only: ``await-test-vms``) needs the gate, the test networks and
      every ``start-test-vms`` and ``after:`` step of g-1: the test VMs come up in the recovery
      plan's order, as the real ones would.
    - reserve-test(g) needs every start-test(g, *): the test VMs' NICs are the grants' owners,
      and do not exist before. connect-test(g) needs reserve-test(g) and the test networks.
    - start-test-vms(g, T) needs connect-test(g) and start-test(g, T).
    - test-dns(g, zone) needs every start-test-vms(g, *) (network-only: connect-test(g)), and
      the step before it in its zone. So the next group's test VMs are made while this group's
      test DNS is written: test records are only ever seen in the test bubble.
    - its ``after:`` steps, one after the other, the first needing everything of g.
    """
    full = config.agent.mode == "full"
    target = plan.target_site
    b = Steps()
    nets = plan.of(CreateTestNetwork)
    test_sources = _Sources(config, plan.of(ReserveIp))
    networks = b.add_stage([_vmm_step("create-test-networks", "vmm.create_test_networks", target,
                                      CreateTestNetworksArgs(site=target, items=tuple(
                                          TestNetworkItem(key=n.name, name=n.name, copy_of=n.copy_of) for n in nets)))
                            if nets else None], [])
    previous, previous_up, gate = list(networks), list(networks), list[str]()
    last_zone: dict[str, str] = {}
    for (_, group), vms in by(plan.vms, lambda v: (v.group_index, v.group)).items():
        names = {v.name for v in vms}
        first = len(b.steps)
        gate = _group_steps(b, config, plan, group, OperationKind.TEST_FAILOVER, "before", previous)[-1:] or gate
        if full:
            tested = b.add_stage(_replicate_steps(group, "start-test", target, vms, _target_host, "start_test"),
                                 gate + networks + previous_up)
        else:
            tested = b.add_stage([step(f"{group}/await-test-vms", "hyperv.await_failover", None, AwaitFailoverArgs(
                site=target, states=(ReplicationState.REPLICATING.value,), require_test_vm=True,
                instruction="start the test failover of {vms} with your orchestrator, then resume",
                items=tuple(AwaitItem(key=v.name, vm=v.name, host=v.target_host) for v in vms)), group)],
                gate + networks + previous_up)
        mine = [r for r in plan.of(ReserveIp) if r.vm in names and r.purpose == "test"]
        ready = b.add_stage([_vmm_step(f"{group}/reserve-test", "vmm.reserve", target, ReserveArgs(
            site=target, items=_reserve_items(mine, test=True)), group) if mine else None], tested) or tested
        conns = [c for c in plan.of(ConnectNic) if c.vm in names and c.purpose == "test"]
        ready = b.add_stage([_vmm_step(f"{group}/connect-test", "vmm.connect", target, ConnectArgs(
            site=target, items=_connect_items(conns)), group) if conns else None], ready + networks) or ready
        up = ready
        if full:
            up = b.add_stage(_power_steps(group, "start-test-vms", target, vms, _target_host, "start",
                                          target_vm=lambda v: name_test_vm(v.name)),
                             ready, each=f"{group}/start-test/{{host}}")
        _dns_stage(b, _dns_steps(group, [c for c in plan.of(DnsChange) if c.vm in names and c.purpose == "test"],
                                 "test-dns", test_sources), up, last_zone)
        after = _group_steps(b, config, plan, group, OperationKind.TEST_FAILOVER, "after",
                             [s.name for s in b.steps[first:]])
        previous = [s.name for s in b.steps[first:]]
        previous_up = up + after
    return b.steps


def _restore_dns_steps(prefix: str, zones: Iterable[tuple[str, str]], scope: str, action: str = "dns.restore",
                       group: str | None = None) -> list[StepSpec | None]:
    return [step(f"{prefix}/{server}/{zone}", action, f"dns:{server}",
                 DnsRestoreArgs(server=server, zone=zone, scope=scope), group)
            for server, zone in sorted(set(zones))]


def cleanup_test_steps(config: AgentConfig, test_plan: Plan, test_op_id: str) -> list[StepSpec]:
    """Undo a test failover from any state it can be left in: revert test DNS, stop and delete
    the test VMs, return the test reservations, delete the auto-created networks. Derived from
    the test's plan and journal, not from how far it got, so it is always possible."""
    full = config.agent.mode == "full"
    target = test_plan.target_site
    b = Steps()
    b.add_stage(_restore_dns_steps("restore-test-dns", ((c.server, c.zone) for c in test_plan.of(DnsChange)
                                                        if c.purpose == "test"), test_op_id))
    if full:
        b.add_stage(_replicate_steps("cleanup", "stop-test", target, list(test_plan.vms), _target_host, "stop_test"))
    else:
        conns = [c for c in test_plan.of(ConnectNic) if c.purpose == "test"]
        items = tuple(it.model_copy(update={"vm_network": None, "vm_subnet": None, "addresses": (), "missing_ok": True})
                      for it in _connect_items(conns))
        b.add_stage([_vmm_step("disconnect-test-nics", "vmm.connect", target, ConnectArgs(site=target, items=items))
                     if items else None])
    b.add_stage([_vmm_step("revoke-test-reservations", "vmm.revoke_test_grants", target,
                           RevokeTestGrantsArgs(site=target, test_operation=test_op_id))])
    nets = test_plan.of(CreateTestNetwork)
    b.add_stage([_vmm_step("delete-test-networks", "vmm.delete_test_networks", target, DeleteTestNetworksArgs(
        site=target, items=tuple(NamedItem(key=n.name, name=n.name) for n in nets))) if nets else None])
    return b.steps


def commit_steps(config: AgentConfig, plan: Plan, failover_op_id: str) -> list[StepSpec]:
    """Commit: complete the failover (the old recovery points go away), then give the records
    the failover wrote with the low failover TTL their original TTL back."""
    b = Steps()
    if config.agent.mode == "full":
        b.add_stage(_replicate_steps("commit", "complete", plan.target_site, list(plan.vms), _target_host, "complete"))
    b.add_stage(_restore_dns_steps("commit/restore-ttl", ((c.server, c.zone) for c in plan.of(DnsChange)),
                                   failover_op_id, action="dns.restore_ttl", group="commit"))
    return b.steps


def reverse_steps(config: AgentConfig, plan: Plan) -> list[StepSpec]:
    """Reverse replication (reprotect): the failed-over VMs replicate back to the old primary.
    The mirrored reservations for the way back follow as a ``prepare`` in the new direction."""
    b = Steps()
    if config.agent.mode == "full":
        b.add_stage(_replicate_steps("reverse", "reverse", plan.target_site, list(plan.vms), _target_host, "reverse"))
    return b.steps


def cancel_steps(config: AgentConfig, plan: Plan, op_id: str) -> list[StepSpec]:
    """Undo an uncommitted failover from its snapshots: cancel the Hyper-V Replica failovers
    where each VM's replication says they are (the replica host, or the primary host for one
    stopped after prepare), start again the source VMs the failover found running, put failover
    IPs, routes and DNS records back as they were."""
    b = Steps()
    vms = list(plan.vms)
    if config.agent.mode == "full":
        b.add_stage(_replicate_steps("cancel", "cancel-failover", plan.target_site, vms, _target_host, "cancel"))
        b.add_stage(_power_steps("cancel", "restart-source", plan.source_site, vms, _source_host, "start",
                                 tolerate_unreachable=True, restore_from=op_id))
    b.add_stage([step(f"cancel/restore-failover-ip/{host}", "hyperv.restore_failover", host, RestoreFailoverArgs(
        site=plan.target_site, host=host, scope=op_id, items=tuple(NicItem(key=f"{c.vm}/{c.nic}", vm=c.vm, nic=c.nic)
                                                                  for c in cs)))
        for host, cs in by(plan.of(SetFailoverIp), lambda c: c.host).items()])
    routers = sorted({r.router for m in plan.of(MoveRoute) for r in (*m.withdraw, *m.announce)})
    b.add_stage([step(f"cancel/restore-routes/{router}", "routes.restore", f"router:{router}",
                      RestoreRoutesArgs(router=router, scope=op_id)) for router in routers])
    b.add_stage(_restore_dns_steps("cancel/restore-dns", ((c.server, c.zone) for c in plan.of(DnsChange)), op_id))
    return b.steps


def change_point_steps(plan: Plan) -> list[StepSpec]:
    """Another recovery point for a failover not yet committed, group by group: stop the
    pending failover on the replica host (Stop-VMFailover turns the replica off), fail over
    again to the VM's new point, start it. Failover IPs, routes and DNS stay as the failover
    left them. On Hyper-V this is how the point is changed ("cancel the failover ... Then you can
    choose a different point-in-time and do a Failover": Types of failover operations in
    Hyper-V Replica, Part III, https://blogs.technet.microsoft.com/virtualization/2012/08/08/)."""
    b = Steps()
    target = plan.target_site
    for (_, group), vms in by(plan.vms, lambda v: (v.group_index, v.group)).items():
        b.add_stage(_replicate_steps(group, "stop-failover", target, vms, _target_host, "cancel",
                                     to_fail_over_again=True))
        b.add_stage(_replicate_steps(group, "failover", target, vms, _target_host, "failover"))
        b.add_stage(_power_steps(group, "start", target, vms, _target_host, "start"))
    return b.steps


def steps_for(kind: OperationKind, config: AgentConfig, plan: Plan, parent_id: str | None) -> list[StepSpec]:
    """The steps of an operation of ``kind`` on ``plan`` (``parent_id``: the operation a
    cleanup, commit or cancel follows up)."""
    if kind == OperationKind.PREPARE:
        return prepare_steps(config, plan)
    if kind == OperationKind.TEST_FAILOVER:
        return test_failover_steps(config, plan)
    if kind in (OperationKind.PLANNED_FAILOVER, OperationKind.UNPLANNED_FAILOVER, OperationKind.FAILBACK):
        return failover_steps(config, plan, kind)
    if kind == OperationKind.REVERSE:
        return reverse_steps(config, plan)
    if parent_id is None:
        raise ValueError(f"a {kind.value} follows up another operation: it needs its id")
    if kind == OperationKind.CLEANUP_TEST:
        return cleanup_test_steps(config, plan, parent_id)
    if kind == OperationKind.COMMIT:
        return commit_steps(config, plan, parent_id)
    if kind == OperationKind.CHANGE_RECOVERY_POINT:
        return change_point_steps(plan)
    return cancel_steps(config, plan, parent_id)
