"""Step actions on the Hyper-V hosts: power, Hyper-V Replica's state machine, failover TCP/IP
configurations (set just before failover, put back on cancel), and the network-only wait for
an outside orchestrator to fail the VMs over.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from agent.domain.errors import ReplicationNotEnabled
from agent.domain.model import FailoverIpSetting, NicFailoverConfig, PowerState, Replication, ReplicationState
from agent.engine.actions.base import ActionContext, action, error_json, outcomes, tolerant
from agent.engine.actions.vmm import reserved_by_nic
from agent.engine.model import ItemOutcome, StepResult
from agent.engine.steps import (
    AwaitFailoverArgs,
    AwaitItem,
    HostVmItem,
    PowerArgs,
    ReplicateArgs,
    RestoreFailoverArgs,
    SetFailoverArgs,
)
from agent.errors import AgentError, ConflictError, TransientError
from agent.ports import HyperV, ItemResult


class FailoverCompleted(ConflictError):
    """A cancel met a failover that is completed (``FailedOver``): only a failback undoes it."""

    code = "failover_completed"


def _on_host(ctx: ActionContext, args: PowerArgs | ReplicateArgs, what: str,
             call: Callable[[HyperV, str, list[str]], Sequence[ItemResult[Any]]],
             already_done: Callable[[list[HostVmItem]], set[str]] | None = None) -> StepResult:
    """One call on one host for the step's live items (those not ``already_done``)."""
    items, skipped = ctx.live(args.items)
    if already_done is not None and items:
        done = already_done(items)
        skipped += [ItemOutcome(key=it.key, vm=it.vm) for it in items if it.vm in done]
        items = [it for it in items if it.vm not in done]
    if not items:
        return StepResult(items=skipped)
    hv, host = ctx.ports.hyperv[args.site], args.host
    vms = [it.target_vm for it in items]
    return StepResult(items=skipped + tolerant(ctx, args.tolerate_unreachable, items, f"{what}@{host}",
                                               lambda: call(hv, host, vms)))


def power_key(site: str, host: str, vm: str) -> str:
    """How a VM's power-state snapshot is keyed (the stop and a cancel's restart must agree)."""
    return f"{site}/{host}/{vm}"


@action("hyperv.power", PowerArgs)
def power(ctx: ActionContext, args: PowerArgs) -> StepResult:
    if args.restore_from is not None:
        return _restore_power(ctx, args, args.restore_from)
    if args.power == "stop":
        return _stop(ctx, args)
    return _on_host(ctx, args, f"hyperv.set_power.{args.power}",
                    lambda hv, host, vms: hv.set_power(host, args.power, vms))


def _set_power(ctx: ActionContext, args: PowerArgs, items: list[HostVmItem]) -> list[ItemOutcome]:
    hv, host = ctx.ports.hyperv[args.site], args.host
    return tolerant(ctx, args.tolerate_unreachable, items, f"hyperv.set_power.{args.power}@{host}",
                    lambda: hv.set_power(host, args.power, [it.target_vm for it in items]))


def _stop(ctx: ActionContext, args: PowerArgs) -> StepResult:
    """Stop the VMs, having journalled first how each one was, so that a cancel starts again
    exactly those that were running (and leaves off those that were off)."""
    items, skipped = ctx.live(args.items)
    if not items:
        return StepResult(items=skipped)
    site, host = args.site, args.host
    try:
        seen = ctx.call(f"vmm.read_inventory@{site}", ctx.ports.vmm[site].read_inventory).vms
    except TransientError:
        if not args.tolerate_unreachable:
            raise
        seen = None  # a site going dark: what the stop itself reports is all there is to know
    if seen is not None:
        wanted = {it.target_vm for it in items}
        ctx.journal.snapshot_many(scope=ctx.op_id, kind="power", data={
            power_key(site, host, v.name): {"power": v.power_state.value}
            for v in seen if v.name in wanted and v.role != "test"})
    done = _set_power(ctx, args, items)
    if seen is None:
        ctx.journal.snapshot_many(scope=ctx.op_id, kind="power", data={
            power_key(site, host, it.target_vm): {"power": PowerState.RUNNING.value}
            for it, o in zip(items, done, strict=True) if o.changed})
    return StepResult(items=skipped + done)


def _restore_power(ctx: ActionContext, args: PowerArgs, scope: str) -> StepResult:
    """Start again the VMs operation ``scope`` found running before it stopped them."""
    items, skipped = ctx.live(args.items)
    snaps = {s.key: s.data for s in ctx.journal.snapshots(
        scope=scope, kind="power", keys=[power_key(args.site, args.host, it.target_vm) for it in items])}
    start: list[HostVmItem] = []
    for it in items:
        was = snaps.get(power_key(args.site, args.host, it.target_vm))
        if was is None:
            skipped.append(ItemOutcome(key=it.key, vm=it.vm, skipped=f"{scope} did not stop it: left as it is"))
        elif was["power"] != PowerState.RUNNING.value:
            skipped.append(ItemOutcome(key=it.key, vm=it.vm, skipped=f"it was {was['power']} before {scope}: "
                                                                      "left so"))
        else:
            start.append(it)
    return StepResult(items=skipped + (_set_power(ctx, args, start) if start else []))


@action("hyperv.replicate", ReplicateArgs)
def replicate(ctx: ActionContext, args: ReplicateArgs) -> StepResult:
    what = args.replica_action
    if what == "cancel":
        return _cancel_where_they_are(ctx, args)

    def test_vm_exists(items: list[HostVmItem]) -> set[str]:
        # Hyper-V refuses to start a test failover of a VM that has a test VM already. Creating
        # the operation refused VMs with a test failover running, so a test VM found now is this
        # operation's own, from an attempt cut off before its outcome was journalled: done.
        hv, host = ctx.ports.hyperv[args.site], args.host
        reps = ctx.call(f"hyperv.get_replications@{host}", lambda: hv.get_replications(host, [it.vm for it in items]))
        return {r.vm for r in reps if r.test_vm}

    points = {it.target_vm: it.recovery_point for it in args.items if it.recovery_point is not None}
    return _on_host(ctx, args, f"hyperv.replicate.{what}",
                    lambda hv, host, vms: hv.replicate(host, what, vms, {v: points[v] for v in vms if v in points}
                                                       or None),
                    already_done=test_vm_exists if what == "start_test" else None)


def _cancel_where_they_are(ctx: ActionContext, args: ReplicateArgs) -> StepResult:
    """Cancel each VM's failover on the host that holds it now, as its replication says: a
    failover stopped after ``prepare`` is cancelled on the primary host, one that went through
    on the replica host; a VM still replicating has nothing to undo. A failover that turned the
    replica on is not cancelled while its primary host cannot be reached: the cancel would turn
    the replica off with nobody to start the primary, the VM off at both sites."""
    items, skipped = ctx.live(args.items)
    if not items:
        return StepResult(items=skipped)
    hv, host = ctx.ports.hyperv[args.site], args.host
    reps = {r.vm: r for r in ctx.call(f"hyperv.get_replications@{host}",
                                      partial(hv.get_replications, host, [it.vm for it in items]))}
    done: list[ItemOutcome] = []
    where: dict[tuple[str, str], list[HostVmItem]] = defaultdict(list)
    for it in items:
        rep = reps.get(it.vm)
        if rep is None:
            done.append(_failed(it, ReplicationNotEnabled(
                f"no replication of {it.vm} on {host}: cannot tell where its failover is", vm=it.vm, host=host)))
        elif rep.state == ReplicationState.REPLICATING:
            done.append(ItemOutcome(key=it.key, vm=it.vm))
        elif rep.state == ReplicationState.PREPARED_FOR_FAILOVER and args.to_fail_over_again:
            done.append(_failed(it, ConflictError(
                f"{it.vm} is prepared for failover, not failed over: there is no recovery point to change; finish "
                "or undo the failover first", vm=it.vm, state=rep.state.value)))
        elif rep.state == ReplicationState.PREPARED_FOR_FAILOVER:
            where[(rep.primary_site, rep.primary_host)].append(it)
        elif rep.state == ReplicationState.FAILED_OVER_WAITING_COMPLETION:
            problem = None if args.to_fail_over_again else _primary_unreachable(ctx, rep)
            if problem is None:
                where[(rep.replica_site, rep.replica_host)].append(it)
            else:
                done.append(ItemOutcome(key=it.key, vm=it.vm, error={
                    **error_json(problem), "vm": it.vm,
                    "message": f"the failover of {it.vm} is kept, running at {rep.replica_site}: its primary host "
                               f"{rep.primary_host} cannot be reached to start it again ({problem.message})"}))
        elif args.to_fail_over_again:
            done.append(_failed(it, FailoverCompleted(
                f"the failover of {it.vm} is committed ({rep.state.value} at {rep.replica_site}): its other recovery "
                "points are gone, its point cannot change", vm=it.vm, state=rep.state.value)))
        else:
            done.append(_failed(it, FailoverCompleted(
                f"the failover of {it.vm} is completed ({rep.state.value} at {rep.replica_site}): a cancel cannot "
                "undo it; it runs there until it is failed back", vm=it.vm, state=rep.state.value)))
    for (site, on), its in sorted(where.items()):
        call = partial(ctx.ports.hyperv[site].replicate, on, "cancel", [i.vm for i in its])
        try:
            done += outcomes(its, ctx.call(f"hyperv.replicate.cancel@{on}", call))
        except TransientError as exc:
            done += [_failed(i, exc) for i in its]
    return StepResult(items=skipped + done)


def _failed(it: HostVmItem, exc: AgentError) -> ItemOutcome:
    return ItemOutcome(key=it.key, vm=it.vm, error=error_json(exc))


def _primary_unreachable(ctx: ActionContext, rep: Replication) -> TransientError | None:
    hv = ctx.ports.hyperv[rep.primary_site]
    try:
        ctx.call(f"hyperv.get_replications@{rep.primary_host}", partial(hv.get_replications, rep.primary_host,
                                                                        [rep.vm]))
    except TransientError as exc:
        return exc
    return None


def failover_config_key(site: str, host: str, vm: str, nic: str) -> str:
    """How a NIC's failover-configuration snapshot is keyed (set and restore must agree)."""
    return f"{site}/{host}/{vm}/{nic}"


@action("hyperv.set_failover", SetFailoverArgs)
def set_failover(ctx: ActionContext, args: SetFailoverArgs) -> StepResult:
    """Set failover IPs just before failover, with the addresses actually reserved. The previous
    configuration is snapshotted first so a cancel can put it back."""
    site, host = args.site, args.host
    hv = ctx.ports.hyperv[site]
    items, skipped = ctx.live(args.items)
    if not items:
        return StepResult(items=skipped)
    current = ctx.call(f"hyperv.get_failover_configs@{host}",
                       lambda: hv.get_failover_configs(host, [(it.vm, it.nic) for it in items]))
    by_nic = {(c.vm, c.nic): c for c in current}
    snaps: dict[str, object] = {}
    for it in items:
        before = by_nic.get((it.vm, it.nic))
        snaps.setdefault(failover_config_key(site, host, it.vm, it.nic),
                         [s.model_dump(mode="json") for s in (before.settings if before else ())])
    ctx.journal.snapshot_many(scope=ctx.op_id, kind="failover_config", data=snaps)
    reserved = reserved_by_nic(ctx, [it.vm for it in items], "failover")
    configs = []
    for it in items:
        granted = reserved.get((it.vm, it.nic), {})
        settings = tuple(s.setting(granted.get(s.ip_index, s.address)) for s in it.settings)
        configs.append(NicFailoverConfig(vm=it.vm, nic=it.nic, host=host, settings=settings))
    results = ctx.call(f"hyperv.set_failover_configs@{host}", lambda: hv.set_failover_configs(host, configs))
    return StepResult(items=skipped + outcomes(items, results))


@action("hyperv.restore_failover", RestoreFailoverArgs)
def restore_failover(ctx: ActionContext, args: RestoreFailoverArgs) -> StepResult:
    """Put back the failover configuration snapshotted by operation ``scope``."""
    site, host = args.site, args.host
    hv = ctx.ports.hyperv[site]
    snaps = {s.key: s.data for s in ctx.journal.snapshots(scope=args.scope, kind="failover_config")}
    configs, items, cleared, unset = [], [], [], []
    for it in args.items:
        key = failover_config_key(site, host, it.vm, it.nic)
        if key not in snaps:
            continue
        if not snaps[key]:
            # There was none: remove ours (setting an empty configuration is refused).
            cleared.append(it)
            unset.append((it.vm, it.nic))
            continue
        items.append(it)
        configs.append(NicFailoverConfig(vm=it.vm, nic=it.nic, host=host,
                                         settings=tuple(FailoverIpSetting.model_validate(s) for s in snaps[key])))
    done: list[ItemOutcome] = []
    if configs:
        results = ctx.call(f"hyperv.set_failover_configs@{host}", lambda: hv.set_failover_configs(host, configs))
        done += outcomes(items, results)
    if unset:
        cleared_results = ctx.call(f"hyperv.clear_failover_configs@{host}",
                                   lambda: hv.clear_failover_configs(host, unset))
        done += outcomes(cleared, cleared_results)
    return StepResult(items=done)


@action("hyperv.await_failover", AwaitFailoverArgs)
def await_failover(ctx: ActionContext, args: AwaitFailoverArgs) -> StepResult:
    """Network-only mode: the outside orchestrator fails the VMs over. Wait (for an operator or
    the orchestrator to resume the operation) until every live VM of the group has failed over."""
    hv = ctx.ports.hyperv[args.site]
    items, skipped = ctx.live(args.items)
    by_host: dict[str, list[AwaitItem]] = {}
    for it in items:
        by_host.setdefault(it.host, []).append(it)
    want = set(args.states)
    pending: dict[str, str] = {}
    for host, on_host in by_host.items():
        reps = ctx.call(f"hyperv.get_replications@{host}", partial(hv.get_replications, host, [i.vm for i in on_host]))
        states = {r.vm: r for r in reps}
        for it in on_host:
            rep = states.get(it.vm)
            if rep is None:
                pending[it.vm] = f"no replication on {host}"
            elif rep.state.value not in want:
                pending[it.vm] = rep.state.value
            elif args.require_test_vm and not rep.test_vm:
                pending[it.vm] = "no test VM"
    if pending:
        # Whoever resumes is told which VMs are not there yet and why: routes and DNS wait for them.
        found = ", ".join(f"{vm} {why}" for vm, why in sorted(pending.items()))
        return StepResult(items=skipped, waiting=f"{args.instruction.format(vms=', '.join(sorted(pending)))} "
                                                 f"(not yet: {found})")
    return StepResult(items=skipped + [ItemOutcome(key=it.key, vm=it.vm) for it in items])
