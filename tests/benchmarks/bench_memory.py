"""Benchmark: the agent's own memory and CPU for a planned failover of 1,000 and 10,000 VMs.

Run: ``python tests/benchmarks/bench_memory.py`` (from the repository root; a few minutes at the
default sizes). Writes ``tests/benchmarks/RESULTS-memory.md``. Nothing here asserts; the targets
(issue 13) are a peak RSS under 300 MB through ``Engine.run`` at 10,000 VMs, and an agent CPU per
VM no higher than the 1.5-1.8 ms measured before.

The world is ``bench_engine``'s (two sites, 4 Hyper-V hosts each, 10 groups, a SQLite journal on
disk, the simulator's state in /dev/shm), but the simulator answers without its latency model
(``--scale``, default 0): this benchmark measures what the agent spends, not what it waits for.
Each size runs in a process of its own, so one size's heap does not inflate the next's peak.

* **peak RSS** is VmHWM, reset just before ``Engine.run`` (Linux ``clear_refs``), so it counts
  what the process held at its highest during the run -- the simulator's world and the loaded
  config included (they are there before the run starts: "at start").
* **agent CPU** is the process's CPU time during ``Engine.run`` less the CPU time spent inside
  the simulated ports (each call measured with its thread's CPU clock by a proxy on the ports).
  The simulator rewrites its whole state on every change, so at 10,000 VMs it is most of the
  process's CPU; what is left is the engine, the journal and the actions.

``--profile N`` prints the N functions with the most cumulative time (cProfile) of one size;
``--tracemalloc`` prints the allocation sites holding most memory at the run's peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

import agent.yamlfile  # noqa: E402
from agent.configfile import load_config  # noqa: E402
from agent.engine.model import OperationKind  # noqa: E402
from agent.engine.service import Engine  # noqa: E402
from agent.engine.store import Store  # noqa: E402
from agent.ports import Ports  # noqa: E402
from agent.wiring import connect  # noqa: E402
from tests.benchmarks.bench_engine import PLAN, generate, reset_peak_rss, set_latency  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

BEFORE = ("measured with this script on main as of 9514867 (before the lean journal), 2026-12-04, load average "
          "2-12: 1,000 VMs: peak 142 MB (123 MB at start), agent CPU 6.24 ms per VM (simulator 3.70 s); 10,000 VMs: "
          "peak 622 MB (485 MB at start, of which the simulated world ~333 MB), agent CPU 5.22 ms per VM (simulator "
          "46.80 s). The issue's 1.5-1.8 ms per VM was measured otherwise (not the process's CPU time less the "
          "simulator's); compare like with like")


class PortClock:
    """CPU time spent inside port calls (the simulator's own work), summed over threads."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.calls = 0
        self.lock = threading.Lock()

    def wrap(self, port: Any) -> Any:
        return _Timed(self, port)


class _Timed:
    def __init__(self, clock: PortClock, port: Any) -> None:
        self._clock, self._port = clock, port

    def __getattr__(self, attr: str) -> Any:
        fn = getattr(self._port, attr)
        if not callable(fn) or attr.startswith("_"):
            return fn
        clock = self._clock

        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - t0
                with clock.lock:
                    clock.cpu += spent
                    clock.calls += 1

        return call


def timed(ports: Ports, clock: PortClock) -> Ports:
    return dataclasses.replace(
        ports,
        vmm={k: clock.wrap(v) for k, v in ports.vmm.items()},
        hyperv={k: clock.wrap(v) for k, v in ports.hyperv.items()},
        dns={k: clock.wrap(v) for k, v in ports.dns.items()},
        routes=clock.wrap(ports.routes),
    )


def world_of(d: Path, n_vms: int) -> Path:
    """``bench_engine``'s world for ``n_vms``: its application network is a /20 (about 4,000
    addresses), too small for the 8,000 changed addresses of 10,000 VMs, so here it is a /16 at
    both sites (the same addresses, pools reaching further)."""
    cfg = generate(d, n_vms)
    inv_path = d / "inventory.yaml"
    inv = json.loads(inv_path.read_text(encoding="utf-8"))
    for site in inv["sites"][:2]:
        for net in site["vm_networks"]:
            for sub in net["subnets"]:
                if sub["name"] == "apps":
                    sub["prefix"] = sub["prefix"].replace(".0.0/20", ".0.0/16")
                    for pool in sub["pools"]:
                        pool["range"][1] = pool["range"][1].replace(".15.250", ".255.250")
        for vm in site["vms"]:
            for nic in vm["nics"]:
                nic["addresses"] = [a.replace("/20", "/16") for a in nic["addresses"]]
    inv_path.write_text(json.dumps(inv), encoding="utf-8")
    return cfg


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def one(n_vms: int, scale: float, profile: int, trace: bool) -> dict[str, Any]:
    """One size, in this process: build the world, create the operation, measure its run."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # warnings off: not measured
    # The simulator's inventory of 10,000 VMs (~6 MB, ~400,000 values) is over the loader's caps
    # on a file an operator hands the agent; this benchmark's own generated file is not such a file.
    agent.yamlfile.MAX_FILE_BYTES = 64 * 1024 * 1024
    agent.yamlfile.MAX_VALUES = 10_000_000
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    shm = Path("/dev/shm")
    sim_dir = Path(tempfile.mkdtemp(prefix="bench-memory-sim-", dir=shm if shm.is_dir() else None))
    try:
        cfg = world_of(work, n_vms)
        loaded = dataclasses.replace(load_config(cfg), simulator_state=sim_dir / "state.json")
        gc.collect()
        rss_agent = _status_mb("VmRSS")
        connection = connect(loaded)
        world = connection.simulator
        assert world is not None
        gc.collect()
        sim_mb = _status_mb("VmRSS") - rss_agent
        set_latency(world, 0)
        clock = PortClock()
        store = Store.for_path(work / "journal.sqlite")
        engine = Engine(loaded.config, timed(connection.ports, clock), store)
        op_id = engine.create(OperationKind.PLANNED_FAILOVER, PLAN, requested_by="bench")
        world.set_latency_scale(scale)
        clock.cpu, clock.calls = 0.0, 0
        gc.collect()
        rss_before = _status_mb("VmRSS")
        if not reset_peak_rss():
            raise RuntimeError("cannot reset VmHWM (/proc/self/clear_refs): peak RSS would not be the run's")
        profiler = _ThreadProfiles() if profile else None
        if trace:
            import tracemalloc

            tracemalloc.start(12)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        view = engine.run(op_id)
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        peak = _status_mb("VmHWM")
        if trace:
            _print_trace()
        if profiler is not None:
            profiler.print(profile)
        out = {"vms": n_vms, "scale": scale, "status": view.status, "succeeded_vms": len(view.succeeded_vms),
               "failed_vms": len(view.failed_vms), "wall_s": wall, "cpu_s": cpu, "sim_cpu_s": clock.cpu,
               "port_calls": clock.calls, "agent_cpu_s": cpu - clock.cpu, "rss_before_mb": rss_before,
               "peak_rss_mb": peak, "sim_world_mb": sim_mb, "steps": len(view.steps), "profiled": bool(profiler),
               "traced": trace}
        connection.close()
        store.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sim_dir, ignore_errors=True)


class _ThreadProfiles:
    """cProfile in every thread (the steps of a stage run in a pool of their own), summed."""

    def __init__(self) -> None:
        import cProfile

        self.profiles: list[Any] = []
        self.lock = threading.Lock()
        self._make = cProfile.Profile

    def _start_here(self, *_: Any) -> None:
        sys.setprofile(None)
        prof = self._make(time.thread_time)  # CPU, not wall: waits on locks and sleeps cost nothing
        with self.lock:
            self.profiles.append(prof)
        prof.enable()

    def enable(self) -> None:
        threading.setprofile(self._start_here)
        self._start_here()

    def disable(self) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]
        sys.setprofile(None)

    def print(self, top: int) -> None:
        import pstats

        stats = pstats.Stats(*self.profiles, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)


def _print_trace() -> None:
    import tracemalloc

    current, peak = tracemalloc.get_traced_memory()
    print(f"tracemalloc: {current / 1e6:.1f} MB held at the end, {peak / 1e6:.1f} MB at the peak", file=sys.stderr)
    for stat in tracemalloc.take_snapshot().statistics("traceback")[:8]:
        print(f"{stat.size / 1e6:8.1f} MB in {stat.count} blocks", file=sys.stderr)
        for line in stat.traceback.format()[-8:]:
            print("    " + line, file=sys.stderr)
    tracemalloc.stop()


def report(rows: list[dict[str, Any]], command: str, load: tuple[float, float, float]) -> str:
    lines = [
        "# Memory and agent CPU benchmark: planned failover through `Engine.run`",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {describe()}",
        f"- load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores shared with other "
        "sessions: CPU times are the process's own, wall times are not comparable)",
        f"- command: `{command}`",
        "- world: `bench_engine.py`'s (10 groups, 4 Hyper-V hosts per site, 20 % retained and 80 % changed "
        "addresses, mode full), SQLite journal on disk (WAL, synchronous=FULL), simulator state in /dev/shm; "
        f"latency scale {rows[0]['scale'] if rows else 0} (the simulator answers at once)",
        f"- before: {BEFORE}",
        "",
        "| VMs | steps | status | peak RSS during the run | RSS at start | of which the simulated world "
        "| **peak less the simulated world** | process CPU | simulator CPU | **agent CPU** | **agent CPU per VM** "
        "| wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['vms']:,} | {r['steps']} | {r['status']} ({r['succeeded_vms']:,} ok, {r['failed_vms']} failed) "
            f"| {r['peak_rss_mb']:.0f} MB | {r['rss_before_mb']:.0f} MB | {r['sim_world_mb']:.0f} MB "
            f"| **{r['peak_rss_mb'] - r['sim_world_mb']:.0f} MB** | {r['cpu_s']:.2f} s "
            f"| {r['sim_cpu_s']:.2f} s ({r['port_calls']} calls) | {r['agent_cpu_s']:.2f} s "
            f"| **{1000 * r['agent_cpu_s'] / r['vms']:.2f} ms** | {r['wall_s']:.2f} s |")
    lines += [
        "",
        "Peak RSS is VmHWM reset just before `Engine.run`; it includes what is resident before the run "
        "(the simulated world, the config, the interpreter, what creating the operation left: \"RSS at start\"). "
        "The simulated world stands in for the remote VMM, Hyper-V, DNS and routers, in this process: its "
        "share is the RSS it added when it was opened (before the operation was created), and the peak less it "
        "is the agent's. Agent CPU is the process's CPU time during the run less the CPU time measured inside "
        "the simulated port calls.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--scale", type=float, default=0.0, help="latency scale of the simulator (default 0)")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions (cProfile)")
    parser.add_argument("--tracemalloc", action="store_true", help="print where the memory at the peak is held")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-memory.md"))
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS-memory.md alone")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.vms[0], args.scale, args.profile, args.tracemalloc)))
        return
    load = os.getloadavg()
    rows = []
    for n in args.vms:
        cmd = [sys.executable, __file__, "--one", "--vms", str(n), "--scale", str(args.scale),
               "--profile", str(args.profile)] + (["--tracemalloc"] if args.tracemalloc else [])
        done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    command = "python tests/benchmarks/bench_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(rows, command.strip(), load)
    print(text)
    if not args.no_write and not args.profile and not args.tracemalloc:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
