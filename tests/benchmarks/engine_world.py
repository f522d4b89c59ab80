"""The engine benchmark's world, its call recorder and its naive baseline (bench_engine.py runs them).

The world: two sites with ``hosts`` Hyper-V hosts each, replicated VMs spread round-robin over
the hosts, a recovery plan of ``groups`` groups, mode ``full``. In each group 20 VMs sit on a
subnet of their own that fails over whole (``retain``: its routes move from the primary's router
to the recovery site's, and a third-site router is repointed) and the rest on an application
network whose addresses change (``change``: the A record and the PTR records follow, on a
simulated DNS server).

The latency model (seconds; every call also pays one round trip): round trip 0.020, VMM calls
0.400 + 0.005 per item, Hyper-V calls 0.150 + 0.005 per item, DNS 0.005 + 0.0005 per record,
routers 0.050 -- all multiplied by a scale. The simulator sleeps exactly that for every call.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from agent.domain.model import NicFailoverConfig, RecordChange
from agent.domain.plan import ConnectNic, DnsChange, MoveRoute, ReserveIp, SetFailoverIp
from agent.ports import GrantRequest, NicConnection, Ports

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
    # The application subnet: a /20 (4,096 addresses) as always up to 4,000 VMs, a /18 beyond.
    plen, top = (20, 15) if n_vms <= 4000 else (18, 63)
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
                 "subnets": [{"name": "apps", "prefix": f"{apps}.0.0/{plen}", "vlan_id": 20,
                              "pools": [{"name": f"{pre}-apps", "range": [f"{apps}.0.10", f"{apps}.{top}.250"],
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
            nic = {"name": "nic0", "vm_network": "a-apps", "vm_subnet": "apps", "addresses": [f"{addr}/{plen}"]}
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
    cpu: float
    """The calling thread's CPU inside the call: the in-process simulator's, not the agent's."""


class Recorder:
    """Which step made which port call, how many items, how long it took (wall) and the CPU the
    simulator spent in it. The step is the one the runner's log context names (every step binds
    ``step`` for its log lines), so this does not depend on how the runner schedules steps."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.lock = threading.Lock()

    def wrap_port(self, port_name: str, port: Any) -> Any:
        return _PortProxy(self, port_name, port)


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
            step = structlog.contextvars.get_contextvars().get("step")
            c0, t0 = time.thread_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                t1, c1 = time.perf_counter(), time.thread_time()
                with rec.lock:
                    rec.calls.append(Call(step, kind, items, t0, t1, c1 - c0))

        return call


def instrument(ports: Ports, rec: Recorder) -> Ports:
    return dataclasses.replace(
        ports,
        vmm={k: rec.wrap_port("vmm", v) for k, v in ports.vmm.items()},
        hyperv={k: rec.wrap_port("hyperv", v) for k, v in ports.hyperv.items()},
        dns={k: rec.wrap_port("dns", v) for k, v in ports.dns.items()},
        routes=rec.wrap_port("routes", ports.routes),
    )


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
    return ipaddress.ip_address(address) in ipaddress.ip_network(prefix)


def naive_subset(plan: Any, n: int) -> list[str]:
    """``n`` VMs with the plan's mix of retained and changed addresses, spread over the hosts."""

    retained = {r.vm for r in plan.of(ReserveIp) if r.address == r.source_address}
    keep = [v.name for v in plan.vms if v.name in retained]
    change = [v.name for v in plan.vms if v.name not in retained]
    k = round(n * len(keep) / len(plan.vms))
    return keep[:k] + change[:n - k]


# ----------------------------------------------------------------------------- memory


def status_mb(field: str) -> float | None:
    """A figure of /proc/self/status in MB (VmRSS, VmHWM), None where there is none."""
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


