"""Benchmark: what one changing call costs the simulator, at 1,000 and 10,000 VMs, before and after
the state file became a snapshot plus an append-only change log.

    python tests/benchmarks/bench_sim.py                      # 1,000 and 10,000 VMs, 7 rounds
    python tests/benchmarks/bench_sim.py --vms 1000 --rounds 3 --calls 40 --no-write

The world: two sites with 4 Hyper-V hosts each, one VM network with a /16 pool at each, every VM
replicated with its NIC mapped to the recovery site's network, one A record per VM (the shape of
``bench_engine``'s world, whose /20 application subnet stops at 4,000 VMs). For each size two
worker processes seed the same world, each into a state file of its own: one runs the simulator
of ``--baseline`` (by default 9514867, the last commit that rewrote the whole state on every
change; its ``agent/`` is taken with ``git archive``), the other this tree's. Each round asks both,
one after the other (which goes first alternates), for ``--calls`` calls of each kind, every one
changing something: ``hyperv.set_power`` of one VM (stop, and start next time round),
``dns.apply`` of one record (its TTL moved) and ``vmm.grant_ips`` of one address (revoked after,
untimed). A round's figure is the median ms per call of that worker in that round; the table
gives min and median over rounds of each, and of the paired ratio (before / after, same round).
Also counted: bytes the state file grew or was rewritten by per ``dns.apply`` (the after column
includes the compactions that happened in the round). Results go to ``RESULTS-sim.md``.

Latency off, faults off: the figures are the harness's own cost (lock, catch-up, mutation, write).
Run it with ``nice -n 5`` on a shared machine; the results file records the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BASELINE = "9514867"
KINDS = {"set_power": "`hyperv.set_power` of 1 VM", "dns": "`dns.apply` of 1 record",
         "grant": "`vmm.grant_ips` of 1 address"}


# ------------------------------------------------------------------------------ the worker


def inventory(n_vms: int) -> dict[str, Any]:
    def net(site: str) -> dict[str, Any]:
        return {"name": f"{site}-net", "logical_network": "ln", "isolation": "VLANNetwork",
                "subnets": [{"name": "s", "prefix": "10.1.0.0/16", "vlan_id": 10,
                             "pools": [{"name": f"{site}-pool", "range": ["10.1.0.10", "10.1.255.250"],
                                        "gateway": "10.1.0.1"}]}]}

    def address(i: int) -> str:
        k = 20 + i
        return f"10.1.{k // 256}.{k % 256}"

    vms = [{"name": f"vm{i:05d}", "host": f"a-hv{i % 4 + 1}",
            "nics": [{"name": "nic0", "vm_network": "a-net", "vm_subnet": "s", "addresses": [f"{address(i)}/16"]}],
            "replica": {"site": "site-b", "host": f"b-hv{i % 4 + 1}",
                        "nics": [{"name": "nic0", "vm_network": "b-net", "vm_subnet": "s"}]}} for i in range(n_vms)]
    return {
        "sites": [{"name": "site-a", "hosts": [f"a-hv{h}" for h in range(1, 5)], "logical_networks": ["ln"],
                   "vm_networks": [net("a")], "vms": vms},
                  {"name": "site-b", "hosts": [f"b-hv{h}" for h in range(1, 5)], "logical_networks": ["ln"],
                   "vm_networks": [net("b")]}],
        "dns_servers": [{"name": "ns", "zones": [{"name": "corp.example", "records": [
            {"name": f"vm{i:05d}", "type": "A", "ttl": 3600, "values": [address(i)]} for i in range(n_vms)]}]}],
    }


def worker(inventory: str, state: str) -> None:
    """Opens the world, then answers ``run N`` lines on stdin with one JSON line of timings."""

    from agent.domain.model import RecordChange
    from agent.drivers.sim import SimInventory, SimWorld
    from agent.ports import GrantRequest

    # Validated here rather than read as a file: 10,000 VMs are past the YAML reader's size limit.
    world = SimWorld.open(SimInventory.model_validate(json.loads(Path(inventory).read_text())), state)
    hv, dns, vmm = world.hyperv("site-a"), world.dns("ns"), world.vmm("site-b")
    vms = sorted((v.host, v.name) for v in world.vmm("site-a").read_inventory().vms if v.role == "primary")
    replica_nic = next(n.id for v in vmm.read_inventory().vms for n in v.nics)
    ttl: dict[str, int] = {}
    stopped: set[str] = set()
    i = 0
    print(json.dumps({"ready": len(vms)}), flush=True)
    for line in sys.stdin:
        if line.startswith("compact"):  # this tree only: one compaction, timed as the writer pays it
            store = world._store
            with store.locked():
                state = store.current()
                t = time.perf_counter()
                store._write_snapshot(state, store.seq)  # type: ignore[attr-defined]
                print(json.dumps({"compact_s": time.perf_counter() - t}), flush=True)
            continue
        n = int(line.split()[1])
        times: dict[str, list[float]] = {"set_power": [], "dns": [], "grant": []}
        size0, rewritten = os.path.getsize(state), 0
        for _ in range(n):
            host, name = vms[i % len(vms)]
            i += 1
            action = "start" if name in stopped else "stop"
            t = time.perf_counter()
            [r] = hv.set_power(host, action, [name])
            times["set_power"].append(time.perf_counter() - t)
            assert r.changed, r
            stopped.symmetric_difference_update({name})
            fq = f"{name}.corp.example."
            old = ttl.get(name, 3600)
            value = next(rs for rs in dns.read("corp.example.", [(fq, "A")])).values
            change = RecordChange(zone="corp.example.", name=fq, type="A", ttl=old + 1, expected=value,
                                  new_values=value)
            before = os.path.getsize(state)
            t = time.perf_counter()
            dns.apply("corp.example.", [change])
            times["dns"].append(time.perf_counter() - t)
            after = os.path.getsize(state)
            rewritten += after if after <= before else after - before
            ttl[name] = old + 1
            t = time.perf_counter()
            [g] = vmm.grant_ips([GrantRequest("b-pool", "10.1.255.200", replica_nic)])
            times["grant"].append(time.perf_counter() - t)
            assert g.changed, g
            vmm.revoke_ips([g.value])
        grown = os.path.getsize(state) - size0
        print(json.dumps({"times": times, "file_mb": os.path.getsize(state) / 1e6,
                          "dns_bytes_per_call": rewritten / n, "grown": grown}), flush=True)


# ------------------------------------------------------------------------------ the driver


class Worker:
    def __init__(self, label: str, source: Path, inventory: Path, state: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(source), "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("FA_SIM_VERIFY_CHANGES", None)
        self.label = label
        t = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(inventory), str(state)],
            cwd=source, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = json.loads(self._line())["ready"]
        self.open_s = time.perf_counter() - t

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.label} worker died")
        return line

    def run(self, n: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {n}\n")
        self.proc.stdin.flush()
        return dict(json.loads(self._line()))

    def compact(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write("compact\n")
        self.proc.stdin.flush()
        return float(json.loads(self._line())["compact_s"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def baseline_tree(rev: str, where: Path) -> Path:
    where.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "agent"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


def med_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def measure(n_vms: int, rounds: int, calls: int, tmp: Path, base: Path) -> dict[str, Any]:
    d = tmp / f"world-{n_vms}"
    d.mkdir()
    inv = d / "inventory.json"
    inv.write_text(json.dumps(inventory(n_vms)))
    workers = {"before": Worker("before", base, inv, d / "before.state"),
               "after": Worker("after", ROOT, inv, d / "after.state")}
    per: dict[str, dict[str, list[float]]] = {w: {**{k: [] for k in KINDS}, "bytes": []} for w in workers}
    every: dict[str, dict[str, list[float]]] = {w: {k: [] for k in KINDS} for w in workers}
    ratios: dict[str, list[float]] = {k: [] for k in KINDS}
    file_mb: dict[str, float] = {}
    try:
        for w in workers.values():
            w.run(min(10, calls))  # warm-up: caches, first compaction of nothing
        for r in range(rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            got = {name: workers[name].run(calls) for name in order}
            for name, res in got.items():
                for kind in KINDS:
                    per[name][kind].append(med_ms(res["times"][kind]))
                    every[name][kind] += res["times"][kind]
                per[name]["bytes"].append(res["dns_bytes_per_call"])
                file_mb[name] = res["file_mb"]
            for kind in KINDS:
                ratios[kind].append(per["before"][kind][-1] / per["after"][kind][-1])
        compact_s = statistics.median(workers["after"].compact() for _ in range(3))
    finally:
        for w in workers.values():
            w.close()
    return {"compact_s": compact_s, "vms": n_vms, "per": per, "ratios": ratios, "file_mb": file_mb, "every": every,
            "open_s": {k: w.open_s for k, w in workers.items()}}


def _compaction(r: dict[str, Any]) -> str:
    limit = max(r["file_mb"]["after"] * 1e6, 1 << 20)
    record = statistics.median(r["per"]["after"]["bytes"])
    whole_ms = r["compact_s"] * 1000
    return (f"~{limit / record:,.0f} changes at {r['vms']:,} VMs, and the call that crosses it also writes the "
            f"snapshot ({whole_ms:.0f} ms): amortized {whole_ms * record / limit * 1000:.1f} µs per call")


def write_results(results: list[dict[str, Any]], args: argparse.Namespace, load: tuple[float, ...],
                  load_end: tuple[float, ...], wall: float) -> str:
    sys.path.insert(0, str(ROOT))
    from tests.benchmarks.machine import describe

    lines = [
        "# Simulator: cost of one changing call, before and after the change log",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {describe()}",
        f"- Load average at start: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; at the end: "
        f"{load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} (1 / 5 / 15 min; the machine is shared)",
        f"- Command: `{' '.join(args.argv)}` ({wall:.0f} s)",
        f"- Before: the simulator of commit {args.baseline} (whole state rewritten per change); after: this tree.",
        f"- {args.rounds} paired rounds of {args.calls} calls of each kind per size; a round's figure is the "
        "median of its calls; which side goes first alternates.",
        "",
        "| VMs | call | before ms (min / median) | after ms (min / median) | before / after, paired (min / median) "
        "| mean / max of every call, ms (before; after) |",
        "|---|---|---|---|---|---|",
    ]
    for res in results:
        for kind, label in KINDS.items():
            b, a, q = res["per"]["before"][kind], res["per"]["after"][kind], res["ratios"][kind]
            lines.append(f"| {res['vms']:,} | {label} | {min(b):.2f} / {statistics.median(b):.2f} | "
                         f"{min(a):.3f} / {statistics.median(a):.3f} | "
                         f"**{min(q):.0f} x / {statistics.median(q):.0f} x** | "
                         + "; ".join(f"{statistics.mean(e) * 1000:.2f} / {max(e) * 1000:.1f}"
                                     for e in (res["every"]["before"][kind], res["every"]["after"][kind])) + " |")
    lines += ["", "| VMs | state file (before / after, at the end) | bytes written per `dns.apply` "
              "(before / after, median of rounds; after includes compactions) | world open (before / after) |",
              "|---|---|---|---|"]
    for res in results:
        fb, fa = res["file_mb"]["before"], res["file_mb"]["after"]
        bb, ba = (statistics.median(res["per"][s]["bytes"]) for s in ("before", "after"))
        lines.append(f"| {res['vms']:,} | {fb:.1f} MB / {fa:.1f} MB | {bb:,.0f} / {ba:,.0f} | "
                     f"{res['open_s']['before']:.1f} s / {res['open_s']['after']:.1f} s |")
    lines += [
        "",
        "## Reading",
        "",
        "- Before, every change marshals and writes the whole state (the file size above) under the lock, so a "
        "call's cost grows with the world. After, a change appends one checksummed record of the entries it "
        "touched (the bytes column) and its cost does not grow from 1,000 to 10,000 VMs.",
        "- The max column is the shared machine (see its load average), not compaction: the rounds never reach "
        "one (next point). Absolute figures are inflated by that load too (issue 13 measured 4-5 ms and 60 ms "
        "before, on a quiet machine); each ratio pairs the two sides within one round.",
        "- Compaction (the rounds above never reach it, so it is timed on its own, median of 3): with records of "
        "the size above, the log reaches max(snapshot, 1 MiB) after " + "; ".join(_compaction(r) for r in results)
        + ".",
        "- What remains per call is the lock file, catching up (one header read and an fstat when nothing "
        "changed), the call log line and the record.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vms", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=60)
    p.add_argument("--baseline", default=BASELINE)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    args.argv = ["python", "tests/benchmarks/bench_sim.py", *sys.argv[1:]]
    load, t0 = os.getloadavg(), time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sim-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    try:
        base = baseline_tree(args.baseline, tmp / "baseline")
        results = []
        for n in args.vms:
            res = measure(n, args.rounds, args.calls, tmp, base)
            results.append(res)
            for kind in KINDS:
                b, a = (statistics.median(res["per"][s][kind]) for s in ("before", "after"))
                print(f"{n:>6} VMs {kind:>9}: before {b:7.2f} ms  after {a:7.3f} ms  "
                      f"paired median {statistics.median(res['ratios'][kind]):.0f} x", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = write_results(results, args, load, os.getloadavg(), time.perf_counter() - t0)
    if args.no_write:
        print(text)
    else:
        (HERE / "RESULTS-sim.md").write_text(text)
        print(f"written to {HERE / 'RESULTS-sim.md'}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.path.insert(0, os.environ["PYTHONPATH"])
        worker(sys.argv[2], sys.argv[3])
    else:
        main()
