"""Benchmark: a planned failover of 1,000 VMs in 10 groups across 4 Hyper-V hosts per site.

Run: ``python tests/benchmarks/bench_engine.py`` (from the repository root; about a minute and a
half: three runs at scale 1/10, one at scale 1, the naive subset). Writes
``tests/benchmarks/RESULTS-engine.md``. Nothing here asserts: a benchmark reports numbers, the
reader judges them against the targets (<= 1.15 x the lower bound, >= 20 x faster than one call
per VM per action in sequence). ``--help`` lists the knobs (scale, repeats, sizes).

The world (generated into a temporary directory, config and inventory as files, loaded the way
the agent loads them): two sites with 4 Hyper-V hosts each, 1,000 replicated VMs spread
round-robin over the hosts, a recovery plan of 10 groups x 100 VMs, mode ``full``. In each group
20 VMs sit on a subnet of their own that fails over whole (``retain``: the subnet's routes move
from the primary's router to the recovery site's, and a third-site router is repointed, once the
group is over) and 80 on an application network whose addresses change (``change``: the A record
and the PTR records follow, on a simulated DNS server). The journal is a SQLite file.

The latency model (seconds; every call also pays one round trip): round trip 0.020, VMM calls
0.400 + 0.005 per item, Hyper-V calls 0.150 + 0.005 per item, DNS 0.005 + 0.0005 per record,
routers 0.050 -- all multiplied by ``--scale`` (default 1/10) so a run takes seconds. The
simulator sleeps exactly that for every call, then does its own work: it rewrites its whole JSON
state file on every change, under one lock, a cost that does not scale with the latency. That is
why one more run is made at ``--full-scale`` (default 1, the model's own latencies: ~45 s), and
why the simulator's state files go to ``/dev/shm`` when there is one (the journal stays on disk).
The report separates the simulator's own time on the critical path from the engine's.

The lower bound is computed from the same model: the operation's stages run one after another
and the steps of a stage in parallel, so the bound is the sum over stages of the slowest step,
a step costing the sum of its calls, ``scale * (rt + fixed + per_item * items)`` each. The calls
are the ones each step really made, recorded per step by a thin proxy on the driver ports and
cross-checked against the simulator's own call log. Two bounds are reported: ``writes`` counts
only the one acting call per step (one round trip per host per action per group, the issue's
wording), ``with reads`` also counts the reads the actions make before acting (current failover
IPs, current routes, current DNS records: snapshots for cancel/failback and idempotence).

The naive baseline makes one call per VM per action, in sequence, like the source documents'
sample scripts (and one DNS update per record, one router call per route); it only writes (no
reads), which favours it. It is run on a subset of the VMs (``--naive-vms``, default 20, with the
plan's 1:4 mix of retained and changed addresses) on a fresh copy of the same world, and
extrapolated linearly: per-VM calls x (1000 / subset) + one subnet's route calls x 10 subnets.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from agent.configfile import load_config  # noqa: E402
from agent.domain.model import NicFailoverConfig, RecordChange  # noqa: E402
from agent.domain.plan import ConnectNic, DnsChange, MoveRoute, ReserveIp, SetFailoverIp  # noqa: E402
from agent.domain.planning import build_plan  # noqa: E402
from agent.engine.model import OperationKind  # noqa: E402
from agent.engine.operations import failover_steps  # noqa: E402
from agent.engine.runner import stage_of  # noqa: E402
from agent.engine.service import Engine  # noqa: E402
from agent.engine.store import Store  # noqa: E402
from agent.ports import GrantRequest, NicConnection, Ports  # noqa: E402
from agent.wiring import connect  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

A, B, C = "site-a", "site-b", "branch"
PLAN = "bench"

RT = 0.020
MODEL: dict[str, tuple[float, float]] = {  # port -> (fixed, per item), seconds, before the round trip
    "vmm": (0.400, 0.005),
    "hyperv": (0.150, 0.005),
    "dns": (0.005, 0.0005),
    "routes": (0.050, 0.0),
}
READS = {"vmm.read_inventory", "hyperv.get_failover_configs", "hyperv.get_replications", "dns.read", "dns.verify",
         "routes.read_routes"}


def model_cost(kind: str, items: int, scale: float) -> float:
    fixed, per_item = MODEL[kind.split(".", 1)[0]]
    return scale * (RT + fixed + per_item * items)


# ------------------------------------------------------------------------------- the world


def generate(d: Path, n_vms: int = 1000, groups: int = 10, hosts: int = 4, retain_per_group: int = 20) -> Path:
    """Write config.yaml and inventory.yaml (JSON is YAML) into ``d``; return the config path."""

    per_group = n_vms // groups
    sites: dict[str, dict[str, Any]] = {}
    for site, pre, apps in ((A, "a", "192.168"), (B, "b", "172.16")):
        sites[site] = {
            "name": site, "hosts": [f"{pre}-hv{h}" for h in range(1, hosts + 1)], "logical_networks": ["ln"],
            "vm_networks": [
                # One subnet per group that fails over whole: same prefixes at both sites.
                {"name": f"{pre}-core", "logical_network": "ln", "isolation": "VLANNetwork",
                 "subnets": [{"name": f"core{g}", "prefix": f"10.10.{g}.0/24", "vlan_id": 100 + g,
                              "pools": [{"name": f"{pre}-core{g}", "range": [f"10.10.{g}.10", f"10.10.{g}.250"],
                                         "gateway": f"10.10.{g}.1"}]} for g in range(groups)]},
                # The application network: another subnet at the recovery site.
                {"name": f"{pre}-apps", "logical_network": "ln-apps", "isolation": "VLANNetwork",
                 "subnets": [{"name": "apps", "prefix": f"{apps}.0.0/20", "vlan_id": 20,
                              "pools": [{"name": f"{pre}-apps", "range": [f"{apps}.0.10", f"{apps}.15.250"],
                                         "gateway": f"{apps}.0.1"}]}]},
            ],
            "vms": [],
        }
        sites[site]["logical_networks"].append("ln-apps")
    a_records, ptr_apps, ptr_core, names = [], [], [], []
    for i in range(n_vms):
        g, j = divmod(i, per_group)
        name = f"vm{i:04d}"
        names.append(name)
        h = i % hosts + 1
        if j < retain_per_group:
            addr = f"10.10.{g}.{20 + j}"
            nic = {"name": "nic0", "vm_network": "a-core", "vm_subnet": f"core{g}", "addresses": [f"{addr}/24"]}
            ptr_core.append({"name": f"{20 + j}.{g}.10", "type": "PTR", "ttl": 3600,
                             "values": [f"{name}.corp.example."]})
        else:
            k = 20 + i
            addr = f"192.168.{k // 256}.{k % 256}"
            nic = {"name": "nic0", "vm_network": "a-apps", "vm_subnet": "apps", "addresses": [f"{addr}/20"]}
            ptr_apps.append({"name": f"{k % 256}.{k // 256}", "type": "PTR", "ttl": 3600,
                             "values": [f"{name}.corp.example."]})
        a_records.append({"name": name, "type": "A", "ttl": 3600, "values": [addr]})
        sites[A]["vms"].append({"name": name, "host": f"a-hv{h}", "nics": [nic],
                                "replica": {"site": B, "host": f"b-hv{h}"}})
    inventory = {
        "sites": [sites[A], sites[B], {"name": C}],
        "dns_servers": [{"name": "ns", "zones": [
            {"name": "corp.example", "records": a_records},
            {"name": "168.192.in-addr.arpa", "records": ptr_apps},
            {"name": "16.172.in-addr.arpa"},
            {"name": "10.in-addr.arpa", "records": ptr_core},
        ]}],
        "routers": [
            {"name": "r-a", "site": A,
             "routes": [{"prefix": f"10.10.{g}.0/24", "next_hop": "10.255.0.1"} for g in range(groups)]},
            {"name": "r-b", "site": B},
            {"name": "r-c", "site": C,
             "routes": [{"prefix": f"10.10.{g}.0/24", "next_hop": "10.255.9.1", "metric": 100} for g in range(groups)]},
        ],
    }
    config = {
        "agent": {"site": B, "mode": "full", "owner_id": "bench", "data_dir": str(d)},
        "simulator": {"inventory": "inventory.yaml", "state": "sim-state.json"},
        "sites": [
            {"name": s, "hyperv_hosts": [{"name": f"{p}-hv{h}"} for h in range(1, hosts + 1)], "dns_servers": ["ns"],
             "routers": [{"name": f"r-{p}"}]} for s, p in ((A, "a"), (B, "b"))
        ],
        "third_sites": [{"name": C, "routers": [{"name": "r-c"}]}],
        "network_mappings": [
            {"source": {"site": A, "vm_network": "a-core"}, "target": {"site": B, "vm_network": "b-core"},
             "ip_strategy": "retain"},
            {"source": {"site": A, "vm_network": "a-apps"}, "target": {"site": B, "vm_network": "b-apps"},
             "ip_strategy": "change"},
        ],
        "subnets": [{"prefix": f"10.10.{g}.0/24",
                     "announcements": {A: [{"router": "r-a", "next_hop": "10.255.0.1"}],
                                       B: [{"router": "r-b", "next_hop": "10.255.1.1"}]},
                     "third_site_routes": [{"router": "r-c", "next_hop_by_site": {A: "10.255.9.1", B: "10.255.9.2"},
                                            "metric": 100}]} for g in range(groups)],
        "dns": {"servers": [{"name": "ns", "kind": "sim"}],
                "zones": [{"name": z, "server": "ns"} for z in
                          ("corp.example", "168.192.in-addr.arpa", "16.172.in-addr.arpa", "10.in-addr.arpa")],
                "default_domain": "corp.example", "ttl": {"failover_ttl": 60}},
        "recovery_plans": [{"name": PLAN, "groups": [
            {"name": f"g{g}", "vms": names[g * per_group:(g + 1) * per_group]} for g in range(groups)]}],
    }
    (d / "inventory.yaml").write_text(json.dumps(inventory, indent=1), encoding="utf-8")
    (d / "config.yaml").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return d / "config.yaml"


def set_latency(world: Any, scale: float) -> None:
    for port, (fixed, per_item) in MODEL.items():
        world.set_latency(f"{port}.*", fixed=RT + fixed, per_item=per_item)
    world.set_latency_scale(scale)


# ----------------------------------------------------------------------- call recording


@dataclasses.dataclass
class Call:
    step: str | None
    kind: str
    items: int
    start: float
    end: float


class Recorder:
    """Which step made which port call, how many items, and how long it took (wall)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.steps: dict[str, tuple[float, float]] = {}
        self.local = threading.local()
        self.lock = threading.Lock()

    def wrap_port(self, port_name: str, port: Any) -> Any:
        return _PortProxy(self, port_name, port)

    def wrap_runner(self, runner: Any) -> None:
        inner = runner._run_step

        def run_step(ctx: Any, row: Any) -> Any:
            self.local.step = row.name
            t0 = time.perf_counter()
            try:
                return inner(ctx, row)
            finally:
                with self.lock:
                    self.steps[row.name] = (t0, time.perf_counter())
                self.local.step = None

        runner._run_step = run_step


class _PortProxy:
    def __init__(self, rec: Recorder, name: str, port: Any) -> None:
        self._rec, self._name, self._port = rec, name, port

    def __getattr__(self, attr: str) -> Any:
        fn = getattr(self._port, attr)
        if not callable(fn) or attr.startswith("_"):
            return fn
        rec, name = self._rec, self._name

        def call(*args: Any, **kwargs: Any) -> Any:
            kind = f"{name}.{attr}"
            if attr in ("replicate", "set_power"):
                kind += f".{args[1]}"
            seqs = [a for a in args if isinstance(a, (list, tuple))]
            items = len(seqs[-1]) if seqs else (0 if attr == "read_routes" else 1)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                t1 = time.perf_counter()
                with rec.lock:
                    rec.calls.append(Call(getattr(rec.local, "step", None), kind, items, t0, t1))

        return call


def instrument(ports: Ports, rec: Recorder) -> Ports:
    return dataclasses.replace(
        ports,
        vmm={k: rec.wrap_port("vmm", v) for k, v in ports.vmm.items()},
        hyperv={k: rec.wrap_port("hyperv", v) for k, v in ports.hyperv.items()},
        dns={k: rec.wrap_port("dns", v) for k, v in ports.dns.items()},
        routes=rec.wrap_port("routes", ports.routes),
    )


# --------------------------------------------------------------------------- the bound


def bounds(steps: list[Any], rec: Recorder, scale: float) -> dict[str, Any]:
    """Critical path of the model over the calls each step made; also of the measured call times."""

    by_step: dict[str, list[Call]] = defaultdict(list)
    for c in rec.calls:
        by_step[c.step].append(c)  # type: ignore[index]
    stages: dict[int, list[Any]] = defaultdict(list)
    for s in steps:
        stages[stage_of(s)].append(s)
    b_all = b_writes = sim_path = 0.0
    writes_per_step: Counter[int] = Counter()
    per_stage = []
    for stage in sorted(stages):
        rows = stages[stage]
        cost_all = max(sum(model_cost(c.kind, c.items, scale) for c in by_step[r.name]) for r in rows)
        cost_w = max(sum(model_cost(c.kind, c.items, scale) for c in by_step[r.name] if c.kind not in READS)
                     for r in rows)
        measured_calls = max(sum(c.end - c.start for c in by_step[r.name]) for r in rows)
        for r in rows:
            writes_per_step[sum(1 for c in by_step[r.name] if c.kind not in READS)] += 1
        t0 = min(rec.steps[r.name][0] for r in rows)
        t1 = max(rec.steps[r.name][1] for r in rows)
        b_all += cost_all
        b_writes += cost_w
        sim_path += measured_calls
        per_stage.append({"stage": stage, "steps": len(rows), "first": rows[0].name, "bound": cost_all,
                          "calls_measured": measured_calls, "wall": t1 - t0, "start": t0, "end": t1})
    kinds = Counter(c.kind for c in rec.calls if c.step is not None)
    return {"bound_all": b_all, "bound_writes": b_writes, "sim_path": sim_path, "per_stage": per_stage,
            "writes_per_step": dict(writes_per_step), "kinds": dict(sorted(kinds.items())),
            "stages": len(stages), "steps": len(steps),
            "stray_calls": sum(1 for c in rec.calls if c.step is None)}


# ------------------------------------------------------------------------- naive baseline


def naive(world: Any, plan: Any, vms: list[str], scale: float) -> dict[str, Any]:
    """One call per VM per action, in sequence, writes only; then one subnet's route calls."""

    vmm, hv_src, hv_dst, dns, routes = (world.vmm(plan.target_site), world.hyperv(plan.source_site),
                                        world.hyperv(plan.target_site), world.dns("ns"), world.routes())
    pvm = {v.name: v for v in plan.vms}
    reserves = [c for c in plan.of(ReserveIp) if c.vm in vms and not c.existing]
    connects = [c for c in plan.of(ConnectNic) if c.vm in vms]
    setips = [c for c in plan.of(SetFailoverIp) if c.vm in vms]
    dnsch = [c for c in plan.of(DnsChange) if c.vm in vms]
    calls: list[tuple[str, int]] = []

    def ok(kind: str, results: Any) -> None:
        calls.append((kind, 1))
        for r in results or ():
            if r.error is not None:
                raise RuntimeError(f"naive {kind}: {r.error}")

    t0 = time.perf_counter()
    for name in vms:
        v = pvm[name]
        for c in (c for c in reserves if c.vm == name):
            ok("vmm.grant_ips", vmm.grant_ips([GrantRequest(pool=c.pool, address=c.address, owner_id=c.nic_id,
                                                              description=f"naive {c.vm}/{c.nic}")]))
        for c in (c for c in connects if c.vm == name):
            ok("vmm.connect_nics", vmm.connect_nics([NicConnection(vm=c.vm, nic=c.nic, vm_network=c.vm_network,
                                                                    vm_subnet=c.vm_subnet, addresses=c.addresses)]))
        ok("hyperv.set_power.stop", hv_src.set_power(v.source_host, "stop", [name]))
        ok("hyperv.replicate.prepare", hv_src.replicate(v.source_host, "prepare", [name]))
        for c in (c for c in setips if c.vm == name):
            ok("hyperv.set_failover_configs", hv_dst.set_failover_configs(
                c.host, [NicFailoverConfig(vm=c.vm, nic=c.nic, host=c.host, settings=c.settings)]))
        ok("hyperv.replicate.failover", hv_dst.replicate(v.target_host, "failover", [name]))
        ok("hyperv.set_power.start", hv_dst.set_power(v.target_host, "start", [name]))
        for c in (c for c in dnsch if c.vm == name):
            dns.apply(c.zone, [RecordChange(zone=c.zone, name=c.name, type=c.type, ttl=c.ttl,
                                            expected=tuple(sorted(c.old_values)),
                                            new_values=tuple(sorted(c.new_values)))])
            calls.append(("dns.apply", 1))
    per_vm_s = time.perf_counter() - t0
    per_vm_calls = len(calls)
    # Routes: one call per route, for the subnet(s) the subset's retained VMs sit in.
    moved = [m for m in plan.of(MoveRoute) if any(
        r.address == r.source_address and r.vm in vms and _in(r.address, m.prefix) for r in reserves)]
    t1 = time.perf_counter()
    for m in moved:
        for r in m.withdraw:
            ok("routes.withdraw", routes.withdraw([r]))
        for r in m.announce:
            ok("routes.announce", routes.announce([r]))
    route_s = time.perf_counter() - t1
    return {"vms": len(vms), "per_vm_s": per_vm_s, "per_vm_calls": per_vm_calls, "subnets": len(moved),
            "route_s": route_s, "route_calls": len(calls) - per_vm_calls,
            "per_vm_model": sum(model_cost(k, n, scale) for k, n in calls[:per_vm_calls]),
            "route_model": sum(model_cost(k, n, scale) for k, n in calls[per_vm_calls:])}


def _in(address: str, prefix: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address) in ipaddress.ip_network(prefix)


def naive_subset(plan: Any, n: int) -> list[str]:
    """``n`` VMs with the plan's mix of retained and changed addresses, spread over the hosts."""

    retained = {r.vm for r in plan.of(ReserveIp) if r.address == r.source_address}
    keep = [v.name for v in plan.vms if v.name in retained]
    change = [v.name for v in plan.vms if v.name not in retained]
    k = round(n * len(keep) / len(plan.vms))
    return keep[:k] + change[:n - k]


# ----------------------------------------------------------------------------- memory


def _status(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM, so the next read is the peak since now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


# ------------------------------------------------------------------------------- the run


def one_run(loaded: Any, pristine: Path, work: Path, sim_dir: Path, scale: float, n: int,
            measure_planning: bool) -> dict[str, Any]:
    state = sim_dir / f"sim-state-{n}.json"
    shutil.copyfile(pristine, state)
    run_loaded = dataclasses.replace(loaded, simulator_state=state)
    connection = connect(run_loaded)
    world = connection.simulator
    assert world is not None
    rec = Recorder()
    store = Store.for_path(work / f"journal-{n}.sqlite")
    engine = Engine(loaded.config, instrument(connection.ports, rec), store)
    rec.wrap_runner(engine.runner)
    kind = OperationKind.PLANNED_FAILOVER

    planning: dict[str, float] = {}
    if measure_planning:
        # Planning, taken apart (not on the failover's critical path), at the run's latency:
        # read both sites, plan, build the steps; then Engine.create, which does all of it again
        # and journals the operation with its steps and VM locks.
        world.set_latency_scale(scale)
        t = time.perf_counter()
        inventory = engine.inventory("planned")
        planning["read"] = time.perf_counter() - t
        t = time.perf_counter()
        plan = build_plan(loaded.config, inventory, PLAN, "planned")
        planning["build"] = time.perf_counter() - t
        t = time.perf_counter()
        failover_steps(loaded.config, plan, kind)
        planning["steps"] = time.perf_counter() - t
        t = time.perf_counter()
        op_id = engine.create(kind, PLAN, requested_by="bench")
        planning["create"] = time.perf_counter() - t
    else:
        world.set_latency_scale(0)  # planning is not what this run measures
        op_id = engine.create(kind, PLAN, requested_by="bench")
        world.set_latency_scale(scale)
    plan = engine.journal.operation(op_id).plan
    rec.calls.clear()
    log_before = len(world.calls())

    gc.collect()
    rss_before = _status("VmRSS")
    peak_ok = reset_peak_rss()
    t0 = time.perf_counter()
    view = engine.run(op_id)
    wall = time.perf_counter() - t0
    peak = _status("VmHWM") if peak_ok else None

    steps = engine.journal.steps(op_id)
    b = bounds(steps, rec, scale)
    sim_calls = world.calls()[log_before:]
    check = Counter(c.kind for c in sim_calls) == Counter(c.kind for c in rec.calls)
    check_items = sum(len(c.items) for c in sim_calls if c.kind not in READS) == sum(
        c.items for c in rec.calls if c.kind not in READS)
    from agent.engine.planio import plan_from_json

    plan = plan_from_json(plan)
    verified = verify_world(world.snapshot(), plan)
    gaps = [b["per_stage"][i + 1]["start"] - b["per_stage"][i]["end"] for i in range(len(b["per_stage"]) - 1)]
    result = {
        "scale": scale, "wall": wall, "status": view.status, "failed_vms": len(view.failed_vms),
        "succeeded_vms": len(view.succeeded_vms), "planning": planning,
        "summary": plan.summary(), "rss_before_mb": rss_before, "peak_rss_mb": peak,
        "calls_match_sim_log": check and check_items, "sim_calls": len(sim_calls), "verified": verified,
        "stage_gaps": sum(gaps), "first_stage_start": b["per_stage"][0]["start"] - t0,
        "after_last_stage": t0 + wall - b["per_stage"][-1]["end"], "plan": plan, **b,
    }
    connection.close()
    store.close()
    return result


def verify_world(snap: dict[str, Any], plan: Any) -> str:
    """Everything the failover should have done, read back from the simulated world."""
    problems = []
    vms = [v.name for v in plan.vms]
    for name in vms:
        if snap["vms"][B][name]["power"] != "Running":
            problems.append(f"{name} replica not running")
        if snap["vms"][A][name]["power"] != "Off":
            problems.append(f"{name} primary not off")
        if snap["replications"][name]["state"] not in ("FailedOverWaitingCompletion", "FailedOver"):
            problems.append(f"{name} replication {snap['replications'][name]['state']}")
    moves = plan.of(MoveRoute)
    for m in moves:
        if m.prefix in snap["routes"]["r-a"]["routes"] or m.prefix not in snap["routes"]["r-b"]["routes"]:
            problems.append(f"{m.prefix} not moved")
        if snap["routes"]["r-c"]["routes"][m.prefix]["next_hop"] != "10.255.9.2":
            problems.append(f"{m.prefix} not repointed at r-c")
    records = snap["record_sets"]["ns"]
    changes = plan.of(DnsChange)
    for c in changes:
        got = records.get(c.zone, {}).get(f"{c.name} {c.type.value}")
        if tuple(sorted(got["values"]) if got else ()) != tuple(sorted(c.new_values)):
            problems.append(f"{c.name} {c.type.value} is {got}")
    if problems:
        return f"{len(problems)} problems, e.g. {problems[:3]}"
    return (f"ok: {len(vms)} replicas running with replication failed over, {len(moves)} subnets moved "
            f"(r-a -> r-b, r-c repointed), {len(changes)} DNS record sets hold the planned values")


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    shm = Path("/dev/shm")
    sim_dir = Path(tempfile.mkdtemp(prefix="bench-engine-sim-", dir=args.sim_dir or (shm if shm.is_dir() else None)))
    try:
        t = time.perf_counter()
        cfg_path = generate(work, args.vms, args.groups, args.hosts)
        loaded = load_config(cfg_path)
        with connect(loaded) as seeding:  # seeds the world from the inventory
            set_latency(seeding.simulator, args.scale)
        pristine = sim_dir / "pristine-state.json"
        shutil.copyfile(loaded.simulator_state, pristine)
        setup_s = time.perf_counter() - t

        runs = [one_run(loaded, pristine, work, sim_dir, args.scale, n, measure_planning=n == 0)
                for n in range(args.repeat)]
        full = ([one_run(loaded, pristine, work, sim_dir, args.full_scale, args.repeat, measure_planning=False)]
                if args.full_scale else [])
        plan = runs[0]["plan"]
        for r in runs + full:
            r.pop("plan")

        naive_state = sim_dir / "naive-state.json"
        shutil.copyfile(pristine, naive_state)
        with connect(dataclasses.replace(loaded, simulator_state=naive_state)) as naive_sites:
            world = naive_sites.simulator
        subset = naive_subset(plan, args.naive_vms)
        nv = naive(world, plan, subset, args.scale)
        n_vms, n_subnets = len(plan.vms), len(plan.of(MoveRoute))
        routes_factor = n_subnets / nv["subnets"] if nv["subnets"] else 0
        nv["extrapolated"] = nv["per_vm_s"] * n_vms / nv["vms"] + nv["route_s"] * routes_factor
        nv["extrapolated_model"] = nv["per_vm_model"] * n_vms / nv["vms"] + nv["route_model"] * routes_factor
        nv["subset"] = subset
        return {"runs": runs, "full": full, "naive": nv, "setup_s": setup_s, "ru_maxrss_mb": maxrss_mb(),
                "state_mb": pristine.stat().st_size / 1e6,
                "args": vars(args), "n_vms": n_vms, "n_subnets": n_subnets, "sim_dir": str(sim_dir.parent),
                "journal_dir": str(work.parent)}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(sim_dir, ignore_errors=True)
        else:
            print(f"kept {work} and {sim_dir}", file=sys.stderr)


# ------------------------------------------------------------------------------ report


def _machine() -> str:
    return describe()


def _stage_types(run: dict[str, Any]) -> dict[str, list[float]]:
    """Per stage type (reserve, connect, ...): steps, and mean bound / measured calls / wall in ms."""
    agg: dict[str, list[float]] = {}
    for st in run["per_stage"]:
        label = st["first"].split("/", 1)[1].split("/")[0]
        a = agg.setdefault(label, [0, 0, 0.0, 0.0, 0.0])
        a[0] += 1
        a[1] = st["steps"]
        a[2] += st["bound"] * 1000
        a[3] += st["calls_measured"] * 1000
        a[4] += st["wall"] * 1000
    return {k: [a[1], a[2] / a[0], a[3] / a[0], a[4] / a[0]] for k, a in agg.items()}


def report(res: dict[str, Any], command: str) -> str:
    runs, full, nv, a = res["runs"], res["full"], res["naive"], res["args"]
    med = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
    cols = [med, *full]
    heads = [f"scale {a['scale']:g} (median of {len(runs)})"] + [f"scale {r['scale']:g} (1 run)" for r in full]
    n_vms = res["n_vms"]

    def naive_model(r: dict[str, Any]) -> float:
        return nv["extrapolated_model"] * r["scale"] / a["scale"]

    def row(label: str, fn: Any, target: str = "") -> str:
        return f"| {label} | " + " | ".join(fn(r) for r in cols) + f" | {target} |"

    planning = runs[0]["planning"]
    ratio_ok = [r["wall"] / r["bound_all"] <= 1.15 for r in cols]
    lines = [
        f"# Engine benchmark: planned failover of {n_vms:,} VMs",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {_machine()}",
        f"- command: `{command}` (about {res['elapsed_s'] / 60:.1f} minutes)",
        f"- world: {n_vms:,} replicated VMs in {a['groups']} groups of {n_vms // a['groups']}, {a['hosts']} Hyper-V "
        f"hosts per site, mode full, planned failover; `{med['summary']}`",
        f"- journal: SQLite file on disk ({res['journal_dir']}; WAL, synchronous=FULL, as the agent opens it); "
        f"the simulator's state file in {res['sim_dir']} (it stands in for the remote systems, whose cost is the "
        "latency model below; what it spends per call beyond the model is harness cost)",
        f"- latency model: round trip {RT * 1000:.0f} ms added to every call; VMM 400 ms + 5 ms/item, Hyper-V "
        "150 ms + 5 ms/item, DNS 5 ms + 0.5 ms/record, routers 50 ms; all multiplied by the scale. "
        f"Stated scale: **{a['scale']:g}**" + (f"; one more run at **{full[0]['scale']:g}**"
                                                 + (" (the model's own latencies)" if full[0]["scale"] == 1 else "")
                                                 + ", because the simulator's own cost does not scale"
                                                 if full else ""),
        f"- runs at scale {a['scale']:g}: " + ", ".join(f"{r['wall']:.2f} s" for r in runs)
        + " (fresh world and journal each)",
        "",
        "| | " + " | ".join(heads) + " | target |",
        "|---|" + "---|" * len(cols) + "---|",
        row("failover wall time (`Engine.run`)", lambda r: f"**{r['wall']:.2f} s**"),
        row("lower bound: acting calls only (one round trip per host per action per group)",
            lambda r: f"{r['bound_writes']:.2f} s"),
        row("lower bound: acting calls + the reads the actions make", lambda r: f"{r['bound_all']:.2f} s"),
        row("**wall / bound** (with reads)", lambda r: f"**{r['wall'] / r['bound_all']:.3f}**", "<= 1.15"),
        row("wall / bound (acting calls only)", lambda r: f"{r['wall'] / r['bound_writes']:.3f}"),
        row("simulator's own time on the critical path (measured call path - bound)",
            lambda r: f"{r['sim_path'] - r['bound_all']:.2f} s"),
        row("engine's own time on the critical path (wall - measured call path)",
            lambda r: f"{r['wall'] - r['sim_path']:.2f} s "
                      f"({(r['wall'] - r['sim_path']) / r['bound_all'] * 100:.1f} % of the bound)"),
        row("wall / measured call path (the engine's share alone)", lambda r: f"{r['wall'] / r['sim_path']:.3f}"),
        row(f"naive baseline, extrapolated to {n_vms:,} VMs, measured on {nv['vms']} at scale {a['scale']:g}",
            lambda r: f"{nv['extrapolated']:.1f} s" if r["scale"] == a["scale"] else "(not run)"),
        row("naive baseline at pure model latency (no simulator time)", lambda r: f"{naive_model(r):.1f} s"),
        row("**speed-up**, naive measured / engine measured (both on the simulator)",
            lambda r: f"**{nv['extrapolated'] / r['wall']:.0f} x**" if r["scale"] == a["scale"] else "",
            ">= 20 x"),
        row("speed-up, naive at model latency / engine measured (naive gets no simulator time)",
            lambda r: f"{naive_model(r) / r['wall']:.0f} x"),
        row("speed-up, model / model (naive model / bound)", lambda r: f"{naive_model(r) / r['bound_all']:.0f} x"),
        row("peak RSS during the run (VmHWM reset at its start)",
            lambda r: f"**{r['peak_rss_mb']:.0f} MB** (at start {r['rss_before_mb']:.0f} MB)"
            if r["peak_rss_mb"] else "n/a"),
        "",
        f"Process peak RSS over the whole benchmark (ru_maxrss): {res['ru_maxrss_mb']:.0f} MB. Every run: "
        f"{med['status']}, {med['succeeded_vms']} VMs succeeded, {med['failed_vms']} failed; the world read back "
        f"after the run: {med['verified']}.",
        "",
        "## Reading",
        "",
        f"- Against the bound: {'met' if ratio_ok[0] else 'missed'} at scale {a['scale']:g} "
        f"({med['wall'] / med['bound_all']:.2f} x)"
        + (f", {'met' if ratio_ok[1] else 'missed'} at scale {full[0]['scale']:g} "
           f"({full[0]['wall'] / full[0]['bound_all']:.3f} x)" if full else "")
        + ". What separates wall and bound does not scale with latency: every changing call rewrites the "
        f"simulator's whole state ({res['state_mb']:.1f} MB for this world, marshal format) under one lock, so the "
        f"{a['hosts']} parallel host calls of a stage finish a few ms apart, and the engine spends ~10 ms per stage "
        "(intent and outcome commits of its steps, the stage's threads): "
        + "; ".join(f"at scale {r['scale']:g} that is {r['sim_path'] - r['bound_all']:.2f} s of the path and the "
                    f"engine's own time {r['wall'] - r['sim_path']:.2f} s: an engine costing nothing would "
                    f"still measure {r['sim_path'] / r['bound_all']:.3f} x the bound here"
                    for r in cols) + ".",
        f"- Against the naive baseline: {nv['extrapolated'] / med['wall']:.0f} x measured on the same simulator; "
        "the conservative comparison (the naive script charged pure model latency, the engine its measured wall) "
        + ", ".join(f"{naive_model(r) / r['wall']:.0f} x at scale {r['scale']:g}" for r in cols) + ".",
        "",
        "## Where the time goes, per stage type (mean per group, ms)",
        "",
        "| stage | steps | " + " | ".join(f"bound / calls measured / wall @{r['scale']:g}" for r in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    types = [_stage_types(r) for r in cols]
    for label, v in types[0].items():
        lines.append(f"| {label} | {v[0]} | " + " | ".join(
            f"{t[label][1]:.0f} / {t[label][2]:.0f} / {t[label][3]:.0f}" for t in types) + " |")
    lines += [
        "",
        f"Outside the stages (scale {a['scale']:g}): {med['first_stage_start'] * 1000:.0f} ms before the first "
        f"(load the operation and its {med['steps']} steps), {med['stage_gaps'] * 1000:.0f} ms between all stages "
        f"together (cancel check, thread pool), {med['after_last_stage'] * 1000:.0f} ms after the last (final "
        "status, audit, the operation's view for the caller).",
        "",
        f"{med['steps']} steps in {med['stages']} stages; {med['sim_calls']} port calls: "
        + ", ".join(f"{k} {v}" for k, v in med["kinds"].items())
        + f". The per-step record matches the simulator's call log (kinds, counts, items): "
        f"{'yes' if med['calls_match_sim_log'] else 'NO'}; calls made outside any step: {med['stray_calls']}. "
        "Acting calls per step: "
        + ", ".join(f"{v} steps make {k}" for k, v in med["writes_per_step"].items()) + ".",
        "",
        "## How the bound is computed",
        "",
        "The engine runs an operation stage by stage; the steps of a stage run concurrently (at most 4 per "
        "target and 16 overall: no stage here has more than 4 steps). So no schedule of these steps beats "
        "`sum over stages (max over the stage's steps (sum over the step's calls (scale * (rt + fixed + "
        "per_item * items))))`. The calls counted are the ones each step really made, recorded per step by a "
        "proxy on the driver ports and checked against the simulator's call log. Per group: reserve (1 VMM "
        f"call, {n_vms // a['groups']} items), connect (1 VMM call), shut down sources ({a['hosts']} hosts x "
        f"{n_vms // a['groups'] // a['hosts']} VMs), prepare ({a['hosts']} hosts), set failover IPs "
        f"({a['hosts']} hosts: a read of the current settings, then the set), fail over ({a['hosts']} hosts), "
        f"start ({a['hosts']} hosts), withdraw routes (r-a and r-c: read, then withdraw), "
        "announce routes (r-b and r-c: read, then "
        "announce), DNS (3 zones on one server: read, then one atomic update). The `acting calls only` bound "
        "is the issue's one round trip per host per action per group; the target is judged against the bound "
        "*with* the reads (`hyperv.get_failover_configs`, `routes.read_routes`, `dns.read`, `vmm.read_inventory`) "
        "because they are part of the actions -- the snapshots that cancel and failback restore, the drift "
        "check that makes a re-run idempotent, the reserve step's look for grants an earlier attempt made "
        "(by their marker) and the stop step's record of each VM's power state, so a cancel starts again "
        "only the VMs that were running -- and each precedes the write that needs its answer. No manual or "
        "script steps exist in this plan.",
        "",
        "## Planning (not on the failover's critical path)",
        "",
        f"At scale {a['scale']:g}: reading both sites (2 VMM inventories, 8 hosts, 4 DNS zones, 3 routers) "
        f"{planning['read']:.2f} s; `build_plan` {planning['build']:.2f} s; `failover_steps` "
        f"{planning['steps']:.3f} s; `Engine.create` (all of that again, then journalling the operation with "
        f"{med['steps']} steps and {n_vms:,} VM locks) {planning['create']:.2f} s. The reads are latency-bound: "
        "about ten times longer at the model's own latencies.",
        "",
        "## The naive baseline",
        "",
        f"- subset: {nv['vms']} VMs ({', '.join(nv['subset'][:2])}, ..., {nv['subset'][-1]}: the plan's mix of "
        "retained and changed addresses), on a fresh copy of the same world, at scale "
        f"{a['scale']:g}",
        "- per VM, in sequence, one call each: grant the IP, connect the NIC, stop the source, prepare, set "
        "the failover IP, fail over, start; then one DNS update per record set (A, old PTR, new PTR). Writes "
        "only -- no reads -- which favours the baseline: "
        f"{nv['per_vm_calls']} calls in {nv['per_vm_s']:.2f} s (model alone {nv['per_vm_model']:.2f} s)",
        f"- the routes of the {nv['subnets']} subnet(s) those VMs sit in, one call per route: {nv['route_calls']} "
        f"calls in {nv['route_s']:.2f} s (model {nv['route_model']:.2f} s)",
        f"- extrapolated: per-VM part x {n_vms}/{nv['vms']} + route part x {res['n_subnets']}/{nv['subnets']} = "
        f"{nv['extrapolated']:.1f} s ({nv['extrapolated_model']:.1f} s at pure model latency). Linear by "
        "construction: every VM costs the same calls, every subnet the same route calls.",
        "",
        "## Engine changes this benchmark led to",
        "",
        "The actions used to journal per item: one SQLite transaction for each snapshot, reservation, "
        "reservation lookup, managed record, `written` mark and audit record -- about 14,000 in this "
        "failover. Now each is one transaction per step (batched `Journal` methods with bulk inserts), in the "
        "same order: snapshots before the call that changes, bookkeeping after it. Intent before act and "
        "outcome after are untouched. The operation's view no longer loads every step's spec.",
        "",
        "Measured once before the change (2026-11-25, same machine, same command, on the engine as committed in "
        "5252f6e, extracted with `git archive`): at scale 0.1 the median wall was 18.05 s (4.49 x the bound, "
        "9.44 s of engine time on the path, 17 x over the naive baseline); at scale 1 it was 52.70 s "
        "(1.311 x the bound, 8.23 s of engine time); peak RSS during the run 151 / 157 MB.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--scale", type=float, default=0.1, help="latency scale factor (default 1/10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs at --scale (median reported)")
    parser.add_argument("--full-scale", type=float, default=1.0,
                        help="one more run at this scale (default 1: the model's own latencies); 0 skips it")
    parser.add_argument("--naive-vms", type=int, default=20)
    parser.add_argument("--sim-dir", type=Path, default=None,
                        help="where the simulator's state files go (default /dev/shm if present)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-engine.md"))
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS-engine.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (config, inventory, journal)")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    t0 = time.perf_counter()
    res = run(args)
    res["elapsed_s"] = time.perf_counter() - t0
    given = " ".join(argv if argv is not None else sys.argv[1:])
    command = "python tests/benchmarks/bench_engine.py" + (" " + given).rstrip()
    text = report(res, command)
    if not args.no_write:
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
