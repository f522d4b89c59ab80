"""Benchmark: the agent's own memory and CPU for a planned failover of 1,000 and 10,000 VMs.

Run: ``python tests/benchmarks/bench_memory.py`` (from the repository root; ten minutes or more at
the default sizes). Writes ``tests/benchmarks/RESULTS-memory.md``. Nothing here asserts; the targets
(issue 13) are a peak RSS under 300 MB through ``Engine.run`` at 10,000 VMs, and an agent CPU per
VM no higher than measured before.

The world is ``bench_engine``'s (two sites, 4 Hyper-V hosts each, 10 groups, a SQLite journal on
disk, the simulator's state in /dev/shm), but the simulator answers without its latency model
(``--scale``, default 0): this benchmark measures what the agent spends, not what it waits for.
Each size and mode runs in a process of its own, so one's heap does not inflate the next's peak.

Modes (``--modes``):

* **psrp** (the headline): the agent as on a real site. Its config has no ``simulator`` section;
  every VMM server, Hyper-V host, DNS server and router is a ``<name>.sim.test`` endpoint of the
  PSRP test server (``tests/psrpserver``), run by this script (``--serve``) in a process of its
  own that holds the simulated world. The agent's process is the engine, the journal, the
  PowerShell drivers and the PSRP transport, nothing else.
* **psrp-tuned**: the same, with glibc's malloc tunables that ``service/failover-agent.service``
  sets (``MALLOC_TUNING``) in the agent's environment.
* **inproc**: the ``sim`` drivers, the simulated world in the agent's process.

* **peak RSS** is VmHWM, reset just before ``Engine.run`` (Linux ``clear_refs``), so it counts
  what the process held at its highest during the run -- in inproc mode the simulator's world
  and the loaded config included (they are there before the run starts: "at start").
* **agent CPU**: psrp, the agent process's CPU time during ``Engine.run`` (the server's is read
  from /proc and reported apart); inproc, the process's CPU time less the CPU time spent inside
  the simulated ports (each call measured with its thread's CPU clock by a proxy on the ports).

``--profile N`` prints the N functions with the most cumulative time (cProfile) of one size;
``--tracemalloc`` prints the allocation sites holding most memory at the run's peak;
``BENCH_PROFILE_SERVER=N`` in the environment has the psrp server print its top N (cProfile).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import json
import os
import shutil
import socket
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


PASSWORD = "bench-s3cret"
MODES = ("psrp", "psrp-tuned", "inproc")
MALLOC_TUNING = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
"""What service/failover-agent.service sets (keep the two alike): see the comment there."""


def psrp_config(cfg: Path, port: int | None, *, keep_simulator: bool) -> Path:
    """``cfg`` with every VMM server, Hyper-V host, DNS server and router a ``<name>.sim.test``
    endpoint of the PSRP test server (``tests.remotesim.over_psrp``). The agent's copy has no
    ``simulator`` section: nothing of the simulated world is in the agent's process; the server's
    copy keeps it, as its handlers answer from that world."""
    from tests.remotesim import ALL_ROLES, over_psrp

    data = json.loads(cfg.read_text(encoding="utf-8"))
    over_psrp(ALL_ROLES, port=port)(data)
    if not keep_simulator:
        del data["simulator"]
    out = cfg.with_name("config-psrp-server.yaml" if keep_simulator else "config-psrp-agent.yaml")
    out.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return out


def serve(cfg: Path, state: Path) -> None:
    """The remote sites: the PSRP test server, in this (separate) process, answering from the
    simulated world of ``cfg``. Prints its port, then serves until its stdin closes."""
    from tests.psrpserver.server import PsrpTestServer
    from tests.remotesim import open_world, targets_for

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    agent.yamlfile.MAX_FILE_BYTES = 64 * 1024 * 1024
    agent.yamlfile.MAX_VALUES = 10_000_000
    loaded = dataclasses.replace(load_config(psrp_config(cfg, None, keep_simulator=True)), simulator_state=state)
    world = open_world(loaded)
    set_latency(world, 0)
    server = PsrpTestServer(password=PASSWORD)
    # Every pipeline's script and parameters would be kept for a test to inspect: not wanted here.
    server.received = collections.deque(maxlen=0)  # type: ignore[assignment]
    server.world, server.targets = world, targets_for(loaded.config)
    profiler = _ThreadProfiles() if os.environ.get("BENCH_PROFILE_SERVER") else None
    if profiler is not None:
        profiler.enable()
    server.start()
    print(server.port, flush=True)
    sys.stdin.read()
    server.stop()
    if profiler is not None:
        profiler.disable()
        profiler.print(int(os.environ["BENCH_PROFILE_SERVER"]))


def _sim_test_is_loopback() -> None:
    """``<name>.sim.test`` resolves to 127.0.0.1 in the agent's process (the test server's
    names), as ``tests.psrpserver`` does for a test, without importing pytest here."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.lower().endswith(".sim.test"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(n_vms: int, scale: float, profile: int, trace: bool, mode: str = "psrp") -> dict[str, Any]:
    """One size, in this process: build the world, create the operation, measure its run.

    ``mode`` psrp: this process is the agent alone, with the PowerShell drivers over PSRP to the
    test server, which holds the simulated world in a process of its own (as the remote sites are
    on a real site). ``inproc``: the ``sim`` drivers, the world in this process."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # warnings off: not measured
    # The simulator's inventory of 10,000 VMs (~6 MB, ~400,000 values) is over the loader's caps
    # on a file an operator hands the agent; this benchmark's own generated file is not such a file.
    agent.yamlfile.MAX_FILE_BYTES = 64 * 1024 * 1024
    agent.yamlfile.MAX_VALUES = 10_000_000
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    shm = Path("/dev/shm")
    sim_dir = Path(tempfile.mkdtemp(prefix="bench-memory-sim-", dir=shm if shm.is_dir() else None))
    remote: subprocess.Popen[str] | None = None
    try:
        cfg = world_of(work, n_vms)
        if mode == "psrp":
            remote = subprocess.Popen([sys.executable, __file__, "--serve", str(cfg), str(sim_dir / "state.json")],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert remote.stdout is not None
            port = int(remote.stdout.readline())
            _sim_test_is_loopback()
            os.environ["FA_SIM_PASSWORD"] = PASSWORD
            loaded = load_config(psrp_config(cfg, port, keep_simulator=False))
        else:
            loaded = dataclasses.replace(load_config(cfg), simulator_state=sim_dir / "state.json")
        gc.collect()
        rss_agent = _status_mb("VmRSS")
        connection = connect(loaded)
        world = connection.simulator if mode == "inproc" else None
        if world is not None:
            gc.collect()
            sim_mb = _status_mb("VmRSS") - rss_agent
            set_latency(world, 0)
        else:
            sim_mb = 0.0
        clock = PortClock()
        store = Store.for_path(work / "journal.sqlite")
        ports = timed(connection.ports, clock) if world is not None else connection.ports
        engine = Engine(loaded.config, ports, store)
        op_id = engine.create(OperationKind.PLANNED_FAILOVER, PLAN, requested_by="bench")
        if world is not None:
            world.set_latency_scale(scale)
        clock.cpu, clock.calls = 0.0, 0
        gc.collect()
        rss_before = _status_mb("VmRSS")
        if not reset_peak_rss():
            raise RuntimeError("cannot reset VmHWM (/proc/self/clear_refs): peak RSS would not be the run's")
        profiler = _ThreadProfiles() if profile else None
        tracer = _PeakTrace() if trace else None
        remote_cpu0 = _cpu_of(remote.pid) if remote is not None else 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        view = engine.run(op_id)
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        remote_cpu = _cpu_of(remote.pid) - remote_cpu0 if remote is not None else 0.0
        peak = _status_mb("VmHWM")
        if tracer is not None:
            tracer.print()
        if profiler is not None:
            profiler.print(profile)
        # In psrp mode the whole process is the agent (drivers, transport and all); the sites'
        # CPU is the server process's, measured from /proc.
        sim_cpu = clock.cpu if world is not None else remote_cpu
        out = {"mode": mode, "vms": n_vms, "scale": scale, "status": view.status,
               "succeeded_vms": len(view.succeeded_vms), "failed_vms": len(view.failed_vms), "wall_s": wall,
               "cpu_s": cpu, "sim_cpu_s": sim_cpu, "port_calls": clock.calls,
               "agent_cpu_s": cpu - clock.cpu, "rss_before_mb": rss_before, "peak_rss_mb": peak,
               "sim_world_mb": sim_mb, "steps": len(view.steps), "profiled": bool(profiler), "traced": trace,
               "errors": list(view.errors)[:5]}
        connection.close()
        store.close()
        return out
    finally:
        if remote is not None:
            remote.communicate("", timeout=60)
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


class _PeakTrace:
    """tracemalloc's view at the run's highest point: a thread looks at the traced total every
    50 ms and keeps a snapshot whenever it is 2 MB above the last one kept (the end alone would
    show what is left, not what peaked)."""

    def __init__(self, frames: int = 8) -> None:
        import tracemalloc

        self.tm = tracemalloc
        tracemalloc.start(frames)
        self.snapshot: Any = None
        self.kept = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(0.05):
            current, _ = self.tm.get_traced_memory()
            if current > self.kept + 2_000_000:
                self.snapshot, self.kept = self.tm.take_snapshot(), current

    def print(self) -> None:
        self.done.set()
        self.thread.join()
        current, peak = self.tm.get_traced_memory()
        print(f"tracemalloc: {current / 1e6:.1f} MB held at the end, {peak / 1e6:.1f} MB at the peak, "
              f"{self.kept / 1e6:.1f} MB in the snapshot below", file=sys.stderr)
        snapshot = self.snapshot or self.tm.take_snapshot()
        for stat in snapshot.statistics("traceback")[:12]:
            print(f"{stat.size / 1e6:8.1f} MB in {stat.count} blocks", file=sys.stderr)
            for line in stat.traceback.format()[-8:]:
                print("    " + line, file=sys.stderr)
        self.tm.stop()


MODE_LABEL = {"psrp": "psrp: agent alone, sites over PSRP", "psrp-tuned": "psrp, malloc as the systemd unit",
              "inproc": "inproc: sim drivers, world in process"}


def report(rows: list[dict[str, Any]], command: str, load: tuple[float, float, float],
           load_end: tuple[float, float, float]) -> str:
    lines = [
        "# Memory and agent CPU benchmark: planned failover through `Engine.run`",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {describe()}",
        f"- load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, at the end: {load_end[0]:.2f} "
        f"{load_end[1]:.2f} {load_end[2]:.2f} (2 cores shared with other sessions: CPU times are the process's "
        "own, wall times are not comparable)",
        f"- command: `{command}`",
        "- world: `bench_engine.py`'s (10 groups, 4 Hyper-V hosts per site, 20 % retained and 80 % changed "
        "addresses, mode full), SQLite journal on disk (WAL, synchronous=FULL), simulator state in /dev/shm; "
        f"latency scale {rows[0]['scale'] if rows else 0} (the simulator answers at once)",
        f"- before: {BEFORE}",
        "",
        "| mode | VMs | steps | status | **peak RSS during the run** | RSS at start | of which the simulated world "
        "| peak less the simulated world | agent process CPU | sites' CPU | **agent CPU** | **agent CPU per VM** "
        "| wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        inproc = r["mode"] == "inproc"
        sites = (f"{r['sim_cpu_s']:.2f} s in the ports ({r['port_calls']} calls)" if inproc
                 else f"{r['sim_cpu_s']:.2f} s (server process)")
        lines.append(
            f"| {MODE_LABEL[r['mode']]} | {r['vms']:,} | {r['steps']} | {r['status']} ({r['succeeded_vms']:,} ok, "
            f"{r['failed_vms']} failed) | **{r['peak_rss_mb']:.0f} MB** | {r['rss_before_mb']:.0f} MB "
            f"| {r['sim_world_mb']:.0f} MB | {r['peak_rss_mb'] - r['sim_world_mb']:.0f} MB | {r['cpu_s']:.2f} s "
            f"| {sites} | {r['agent_cpu_s']:.2f} s | **{1000 * r['agent_cpu_s'] / r['vms']:.2f} ms** "
            f"| {r['wall_s']:.2f} s |")
    lines += [
        "",
        "Peak RSS is VmHWM of the agent's process, reset just before `Engine.run`; it includes what is resident "
        "before the run (the config, the interpreter, what creating the operation left: \"RSS at start\"). "
        "psrp: the agent's process holds no simulated world (its config has no `simulator` section); the "
        "PowerShell drivers talk PSRP over HTTP to the wire test server (`tests/psrpserver`) in another "
        "process, which answers from the simulated world: every figure of the agent row is the agent's, "
        "transport included, and the sites' CPU is the server process's. inproc: the `sim` drivers, the world "
        "in the agent's process; its share is the RSS it added when it was opened, and agent CPU is the "
        "process's CPU time less the CPU time measured inside the simulated port calls.",
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
    parser.add_argument("--serve", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="psrp: the agent alone, the sites in a PSRP test server process (the headline); "
                             "psrp-tuned: the same with glibc's malloc set as service/failover-agent.service "
                             "sets it; inproc: the sim drivers, the world in the agent's process")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-memory.md"))
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS-memory.md alone")
    args = parser.parse_args(argv)
    if args.serve:
        serve(*args.serve)
        return
    if args.one:
        print(json.dumps(one(args.vms[0], args.scale, args.profile, args.tracemalloc, args.modes[0])))
        return
    load = os.getloadavg()
    rows = []
    for mode in args.modes:
        for n in args.vms:
            cmd = [sys.executable, __file__, "--one", "--modes", mode.removesuffix("-tuned"), "--vms", str(n),
                   "--scale", str(args.scale), "--profile", str(args.profile)] + (
                       ["--tracemalloc"] if args.tracemalloc else [])
            # glibc reads its tunables when the process starts: they go in the child's environment.
            env = {**os.environ, **MALLOC_TUNING} if mode.endswith("-tuned") else None
            done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
            rows.append({**json.loads(done.stdout.strip().splitlines()[-1]), "mode": mode})
            print(json.dumps(rows[-1]), file=sys.stderr)
    command = "python tests/benchmarks/bench_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(rows, command.strip(), load, os.getloadavg())
    print(text)
    if not args.no_write and not args.profile and not args.tracemalloc:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
