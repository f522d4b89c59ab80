"""From a Plan to the journalled steps of each operation kind.

The step list is a pure function of the plan (and, for follow-up operations, of what the
parent operation recorded), computed once when the operation is created and stored with it.

Batching for recovery time: within a group, every action becomes one step per target host (or
site VMM, DNS zone, router) carrying all the group's items, so a group of 100 VMs on 4 hosts
costs 4 round trips per action, not 100. Steps of one stage run concurrently.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from agent.config import AgentConfig
from agent.domain.model import ReplicationState, name_test_vm
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
from agent.engine.model import OperationKind, StepSpec

FAILED_OVER = [ReplicationState.FAILED_OVER_WAITING_COMPLETION.value, ReplicationState.FAILED_OVER.value]


@dataclass
class _Steps:
    steps: list[StepSpec] = field(default_factory=list)
    stage: int = 0

    def add_stage(self, specs: list[StepSpec | None]) -> None:
        specs = [s for s in specs if s is not None]
        if not specs:
            return
        self.steps += [StepSpec(name=s.name, action=s.action, stage=self.stage, target=s.target, spec=s.spec,
                                group=s.group) for s in specs]
        self.stage += 1


def _by(items: list, key) -> dict[Any, list]:
    out: dict[Any, list] = defaultdict(list)
    for it in items:
        out[key(it)].append(it)
    return dict(sorted(out.items()))


def _reserve_items(changes: list[ReserveIp], *, test: bool) -> list[dict[str, Any]]:
    return [{
        "key": f"{c.vm}/{c.nic}/{c.ip_index}/{c.purpose}", "vm": c.vm, "nic": c.nic, "nic_id": c.nic_id,
        "owner_vm": name_test_vm(c.vm) if test else c.vm, "pool": c.pool, "address": c.address,
        "ip_index": c.ip_index, "purpose": c.purpose,
        # A retained source address must be exactly that address; any other was a free choice.
        "flexible": c.address != c.source_address,
    } for c in changes]


def _connect_items(changes: list[ConnectNic]) -> list[dict[str, Any]]:
    return [{
        "key": f"{c.vm}/{c.nic}/{c.purpose}", "vm": c.vm, "nic": c.nic, "purpose": c.purpose,
        "target_vm": name_test_vm(c.vm) if c.purpose == "test" else c.vm,
        "vm_network": c.vm_network, "vm_subnet": c.vm_subnet, "addresses": [list(a) for a in c.addresses],
    } for c in changes]


def _setip_items(changes: list[SetFailoverIp], reserves: list[ReserveIp]) -> list[dict[str, Any]]:
    index = {(r.vm, r.nic, r.address): r.ip_index for r in reserves}
    items = []
    for c in changes:
        settings = []
        for i, s in enumerate(c.settings):
            settings.append(dict(s.model_dump(mode="json"), ip_index=index.get((c.vm, c.nic, s.address), -1 - i)))
        items.append({"key": f"{c.vm}/{c.nic}", "vm": c.vm, "nic": c.nic, "settings": settings})
    return items


def _dns_steps(group: str, changes: list[DnsChange], label: str) -> list[StepSpec | None]:
    specs: list[StepSpec | None] = []
    for (server, zone), cs in _by(changes, lambda c: (c.server, c.zone)).items():
        items = [{"key": f"{c.name}/{c.type}", "vm": c.vm, "name": c.name, "type": str(c.type), "ttl": c.ttl,
                  "old_values": list(c.old_values), "new_values": list(c.new_values)} for c in cs]
        specs.append(StepSpec(name=f"{group}/{label}/{server}/{zone}", action="dns.apply", stage=0,
                              target=f"dns:{server}", group=group, spec={"server": server, "zone": zone, "items": items}))
    return specs


def _host_steps(group: str, label: str, action: str, site: str, vms: list[PlannedVm], host_of, extra: dict,
                target_vm=lambda v: v.name) -> list[StepSpec | None]:
    specs: list[StepSpec | None] = []
    for host, vs in _by(vms, host_of).items():
        items = [{"key": v.name, "vm": v.name, "target_vm": target_vm(v)} for v in vs]
        specs.append(StepSpec(name=f"{group}/{label}/{host}", action=action, stage=0, target=host, group=group,
                              spec={"site": site, "host": host, "items": items, **extra}))
    return specs


def _after_steps(b: _Steps, config: AgentConfig, plan: Plan, group: str) -> None:
    rp = config.plan(plan.plan)
    g = next((g for g in rp.groups if g.name == group), None) if rp else None
    for i, step in enumerate(g.after if g else []):
        if step.manual:
            b.add_stage([StepSpec(name=f"{group}/after/{i}/manual", action="manual", stage=0, target=None,
                                  group=group, spec={"instruction": step.manual.instruction})])
        elif step.script:
            s = step.script
            b.add_stage([StepSpec(name=f"{group}/after/{i}/script", action="script", stage=0, target=s.host,
                                  group=group, spec={"host": s.host, "path": s.path, "timeout_s": s.timeout_s,
                                                     "parameters": dict(s.parameters)})])


def _route_group(plan: Plan, move: MoveRoute, group_index: dict[str, int]) -> int:
    """A subnet moves once the last VM holding a retained address in it has failed over."""
    net = ipaddress.ip_network(move.prefix)
    indexes = [group_index[r.vm] for r in plan.of(ReserveIp)
               if r.source_address and r.address == r.source_address and ipaddress.ip_address(r.address) in net]
    return max(indexes) if indexes else max(group_index.values(), default=0)


def _route_stages(b: _Steps, moves: list[MoveRoute], group: str, tolerate_old_site: bool) -> None:
    withdraw = [(r, m) for m in moves for r in m.withdraw]
    announce = [(r, m) for m in moves for r in m.announce]
    for label, action, pairs in (("withdraw", "routes.withdraw", withdraw), ("announce", "routes.announce", announce)):
        specs: list[StepSpec | None] = []
        for router, rs in _by(pairs, lambda p: p[0].router).items():
            items = [{"key": f"{r.prefix}@{r.router}", "prefix": r.prefix, "route": r.model_dump(mode="json")} for r, _ in rs]
            extra = {"tolerate_unreachable": True} if (tolerate_old_site and action == "routes.withdraw") else {}
            specs.append(StepSpec(name=f"{group}/routes-{label}/{router}", action=action, stage=0,
                                  target=f"router:{router}", group=group, spec={"router": router, "items": items, **extra}))
        b.add_stage(specs)


def failover_steps(config: AgentConfig, plan: Plan, kind: OperationKind) -> list[StepSpec]:
    """Planned, unplanned and failback failovers. Per group, in order: reserve, connect the
    replica NICs, [full: shut down the sources and prepare], set failover IPs just before
    failover, [full: fail over and start | network-only: wait for the orchestrator], move the
    subnets whose last VM has now failed over, update DNS, then the group's script/manual steps."""

    full = config.agent.mode == "full"
    unplanned = kind == OperationKind.UNPLANNED_FAILOVER
    b = _Steps()
    if kind != OperationKind.UNPLANNED_FAILOVER and config.dns.ttl.lower_before_planned:
        lowered, wait_s = ttl_lowering(plan, config.dns.ttl.failover_ttl)
        b.add_stage(_dns_steps("before", lowered, "lower-ttl"))
        if lowered:
            b.add_stage([StepSpec(name="before/wait-old-ttl", action="dns.wait_ttl", stage=0, target=None,
                                  group="before", spec={"seconds": wait_s, "key": "before/wait-old-ttl"})])
    group_index = {v.name: v.group_index for v in plan.vms}
    groups = _by(list(plan.vms), lambda v: (v.group_index, v.group))
    moves_by_group = _by(plan.of(MoveRoute), lambda m: _route_group(plan, m, group_index))
    reserves = plan.of(ReserveIp)
    for (gi, group), vms in groups.items():
        names = {v.name for v in vms}
        mine = [r for r in reserves if r.vm in names and not r.existing]
        b.add_stage([StepSpec(name=f"{group}/reserve", action="vmm.reserve", stage=0, target=f"vmm:{plan.target_site}",
                              group=group, spec={"site": plan.target_site, "items": _reserve_items(mine, test=False)})
                     if mine else None])
        conns = [c for c in plan.of(ConnectNic) if c.vm in names]
        b.add_stage([StepSpec(name=f"{group}/connect", action="vmm.connect", stage=0, target=f"vmm:{plan.target_site}",
                              group=group, spec={"site": plan.target_site, "items": _connect_items(conns)})
                     if conns else None])
        if full:
            tolerant = {"tolerate_unreachable": True} if unplanned else {}
            b.add_stage(_host_steps(group, "shutdown-source", "hyperv.power", plan.source_site, vms,
                                    lambda v: v.source_host, {"power": "stop", **tolerant}))
            if not unplanned:
                b.add_stage(_host_steps(group, "prepare", "hyperv.replicate", plan.source_site, vms,
                                        lambda v: v.source_host, {"replica_action": "prepare"}))
        setips = [c for c in plan.of(SetFailoverIp) if c.vm in names]
        b.add_stage([StepSpec(name=f"{group}/set-failover-ip/{host}", action="hyperv.set_failover", stage=0,
                              target=host, group=group,
                              spec={"site": plan.target_site, "host": host, "items": _setip_items(cs, reserves)})
                     for host, cs in _by(setips, lambda c: c.host).items()])
        if full:
            b.add_stage(_host_steps(group, "failover", "hyperv.replicate", plan.target_site, vms,
                                    lambda v: v.target_host, {"replica_action": "failover"}))
            b.add_stage(_host_steps(group, "start", "hyperv.power", plan.target_site, vms,
                                    lambda v: v.target_host, {"power": "start"}))
        else:
            b.add_stage([StepSpec(
                name=f"{group}/await-failover", action="hyperv.await_failover", stage=0, target=None, group=group,
                spec={"site": plan.target_site, "states": FAILED_OVER,
                      "instruction": "fail over {vms} to " + plan.target_site
                                     + " with your orchestrator, then resume this operation",
                      "items": [{"key": v.name, "vm": v.name, "host": v.target_host} for v in vms]})])
        _route_stages(b, moves_by_group.get(gi, []), group, tolerate_old_site=unplanned)
        b.add_stage(_dns_steps(group, [c for c in plan.of(DnsChange) if c.vm in names], "dns"))
        _after_steps(b, config, plan, group)
    return b.steps


def prepare_steps(config: AgentConfig, plan: Plan) -> list[StepSpec]:
    """Protection time: reserve the planned addresses in the target pools (reusing grants)."""
    b = _Steps()
    mine = [r for r in plan.of(ReserveIp) if not r.existing and r.purpose == "failover"]
    b.add_stage([StepSpec(name="reserve", action="vmm.reserve", stage=0, target=f"vmm:{plan.target_site}",
                          spec={"site": plan.target_site, "items": _reserve_items(mine, test=False)})
                 if mine else None])
    return b.steps


def test_failover_steps(config: AgentConfig, plan: Plan) -> list[StepSpec]:
    """Test failover: isolated networks, test VMs, test addresses, test DNS only. Production
    networks, failover IPs, routes and production DNS are never touched."""
    full = config.agent.mode == "full"
    b = _Steps()
    nets = plan.of(CreateTestNetwork)
    b.add_stage([StepSpec(name="create-test-networks", action="vmm.create_test_networks", stage=0,
                          target=f"vmm:{plan.target_site}",
                          spec={"site": plan.target_site,
                                "items": [{"key": n.name, "name": n.name, "copy_of": n.copy_of} for n in nets]})
                 if nets else None])
    groups = _by(list(plan.vms), lambda v: (v.group_index, v.group))
    for (_, group), vms in groups.items():
        names = {v.name for v in vms}
        if full:
            b.add_stage(_host_steps(group, "start-test", "hyperv.replicate", plan.target_site, vms,
                                    lambda v: v.target_host, {"replica_action": "start_test"}))
        else:
            b.add_stage([StepSpec(
                name=f"{group}/await-test-vms", action="hyperv.await_failover", stage=0, target=None, group=group,
                spec={"site": plan.target_site, "states": [ReplicationState.REPLICATING.value],
                      "require_test_vm": True,
                      "instruction": "start the test failover of {vms} with your orchestrator, then resume",
                      "items": [{"key": v.name, "vm": v.name, "host": v.target_host} for v in vms]})])
        mine = [r for r in plan.of(ReserveIp) if r.vm in names and r.purpose == "test"]
        b.add_stage([StepSpec(name=f"{group}/reserve-test", action="vmm.reserve", stage=0,
                              target=f"vmm:{plan.target_site}", group=group,
                              spec={"site": plan.target_site, "items": _reserve_items(mine, test=True)})
                     if mine else None])
        conns = [c for c in plan.of(ConnectNic) if c.vm in names and c.purpose == "test"]
        b.add_stage([StepSpec(name=f"{group}/connect-test", action="vmm.connect", stage=0,
                              target=f"vmm:{plan.target_site}", group=group,
                              spec={"site": plan.target_site, "items": _connect_items(conns)})
                     if conns else None])
        if full:
            b.add_stage(_host_steps(group, "start-test-vms", "hyperv.power", plan.target_site, vms,
                                    lambda v: v.target_host, {"power": "start"},
                                    target_vm=lambda v: name_test_vm(v.name)))
        b.add_stage(_dns_steps(group, [c for c in plan.of(DnsChange) if c.vm in names and c.purpose == "test"],
                               "test-dns"))
        _after_steps(b, config, plan, group)
    return b.steps


def cleanup_test_steps(config: AgentConfig, test_plan: Plan, test_op_id: str) -> list[StepSpec]:
    """Undo a test failover from any state it can be left in: revert test DNS, stop and delete
    the test VMs, return the test reservations, delete the auto-created networks. Derived from
    the test's plan and journal, not from how far it got, so it is always possible."""
    full = config.agent.mode == "full"
    b = _Steps()
    servers_zones = sorted({(c.server, c.zone) for c in test_plan.of(DnsChange) if c.purpose == "test"})
    b.add_stage([StepSpec(name=f"restore-test-dns/{server}/{zone}", action="dns.restore", stage=0,
                          target=f"dns:{server}", spec={"server": server, "zone": zone, "scope": test_op_id, "items": []})
                 for server, zone in servers_zones])
    vms = list(test_plan.vms)
    if full:
        b.add_stage(_host_steps("cleanup", "stop-test", "hyperv.replicate", test_plan.target_site, vms,
                                lambda v: v.target_host, {"replica_action": "stop_test"}))
    else:
        conns = [c for c in test_plan.of(ConnectNic) if c.purpose == "test"]
        items = [dict(i, vm_network=None, vm_subnet=None, addresses=[], missing_ok=True) for i in _connect_items(conns)]
        b.add_stage([StepSpec(name="disconnect-test-nics", action="vmm.connect", stage=0,
                              target=f"vmm:{test_plan.target_site}", spec={"site": test_plan.target_site,
                                                                         "items": items})
                     if items else None])
    b.add_stage([StepSpec(name="revoke-test-reservations", action="vmm.revoke_test_grants", stage=0,
                          target=f"vmm:{test_plan.target_site}",
                          spec={"site": test_plan.target_site, "test_operation": test_op_id, "items": []})])
    nets = test_plan.of(CreateTestNetwork)
    b.add_stage([StepSpec(name="delete-test-networks", action="vmm.delete_test_networks", stage=0,
                          target=f"vmm:{test_plan.target_site}",
                          spec={"site": test_plan.target_site,
                                "items": [{"key": n.name, "name": n.name} for n in nets]})
                 if nets else None])
    return b.steps


def commit_steps(config: AgentConfig, plan: Plan, failover_op_id: str) -> list[StepSpec]:
    """Commit: complete the failover (the old recovery points go away), then give the records
    the failover wrote with the low failover TTL their original TTL back."""
    b = _Steps()
    if config.agent.mode == "full":
        b.add_stage(_host_steps("commit", "complete", "hyperv.replicate", plan.target_site, list(plan.vms),
                                lambda v: v.target_host, {"replica_action": "complete"}))
    zones = sorted({(c.server, c.zone) for c in plan.of(DnsChange)})
    b.add_stage([StepSpec(name=f"commit/restore-ttl/{server}/{zone}", action="dns.restore_ttl", stage=0,
                          target=f"dns:{server}", group="commit",
                          spec={"server": server, "zone": zone, "scope": failover_op_id, "items": []})
                 for server, zone in zones])
    return b.steps


def reverse_steps(config: AgentConfig, plan: Plan) -> list[StepSpec]:
    """Reverse replication (reprotect): the failed-over VMs replicate back to the old primary.
    The mirrored reservations for the way back follow as a ``prepare`` in the new direction."""
    b = _Steps()
    if config.agent.mode == "full":
        b.add_stage(_host_steps("reverse", "reverse", "hyperv.replicate", plan.target_site, list(plan.vms),
                                lambda v: v.target_host, {"replica_action": "reverse"}))
    return b.steps
