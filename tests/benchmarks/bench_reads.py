"""Benchmark: reading both sites before a failover, one endpoint after another against concurrently.

Run: ``nice -n 5 python tests/benchmarks/bench_reads.py`` (from the repository root; about five
minutes at the model's latencies). Writes ``tests/benchmarks/RESULTS-reads.md``. Nothing here
asserts: a benchmark reports numbers, the reader judges them. ``--help`` lists the knobs.

The world is ``bench_engine``'s (1,000 replicated VMs in 10 groups, 20 % on subnets that fail over
whole, 80 % changing address, one simulated DNS server with four zones, three routers), generated
with 2, 8 and 32 Hyper-V hosts per site, and the same latency model (``bench_engine.MODEL``: every
call pays a 20 ms round trip; VMM 400 ms + 5 ms per item, Hyper-V 150 ms + 5 ms per item, DNS
5 ms + 0.5 ms per record, routers 50 ms; ``--scale`` multiplies them all).

Each round reads the sites through ``Engine.inventory`` twice, back to back: *one after another*
(the engine given concurrency limits of 1 per host and 1 overall: each call waits for the one
before, as ``agent.inventory`` did before it read concurrently) and *concurrently* (the config's
limits: 4 per host, 16 overall). Both must give the same inventory and plan checksum, which is
checked every round. The pair is timed within the round; min and median are over rounds.

``--end-to-end`` (default on, at the largest host count) also times what ``run`` does after its
preflight: ``Engine.create`` (the reads, the plan, the journal) then ``Engine.run`` (the failover
alone), reported against each other: the issue's target is reads + failover under 1.5 x the
failover alone at 32 hosts per site.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from agent.configfile import load_config  # noqa: E402
from agent.domain.planning import build_plan  # noqa: E402
from agent.engine.model import OperationKind  # noqa: E402
from agent.engine.runner import HostLimits  # noqa: E402
from agent.engine.service import Engine  # noqa: E402
from agent.engine.store import Store  # noqa: E402
from agent.wiring import connect  # noqa: E402
from tests.benchmarks.engine_world import PLAN, generate, set_latency  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

READS = ("vmm.read_inventory", "hyperv.get_replications", "hyperv.get_failover_configs", "dns.read",
         "routes.read_routes")


def world(work: Path, sim_dir: Path, hosts: int, args: argparse.Namespace) -> tuple[Any, Path]:
    d = work / f"hosts-{hosts}"
    d.mkdir()
    loaded = load_config(generate(d, args.vms, args.groups, hosts))
    state = sim_dir / f"state-{hosts}.json"
    loaded = replace(loaded, simulator_state=state)
    with connect(loaded) as seeding:
        set_latency(seeding.simulator, args.scale)
    return loaded, state


def read_round(loaded: Any, work: Path, hosts: int, n: int) -> dict[str, Any]:
    store = Store.for_path(work / f"journal-{hosts}-{n}.sqlite")
    connection = connect(loaded)
    try:
        sim = connection.simulator
        assert sim is not None
        out: dict[str, Any] = {}
        for mode, limits in (("sequential", HostLimits(1, 1)), ("concurrent", None)):
            engine = Engine(loaded.config, connection.ports, store, limits=limits)
            mark = len(sim.calls())
            t = time.perf_counter()
            inventory = engine.inventory("planned")
            took = time.perf_counter() - t
            calls = [c for c in sim.calls()[mark:] if c.kind in READS]
            out[mode] = {"s": took, "calls": len(calls), "call_s": sum(c.duration for c in calls),
                         "checksum": build_plan(loaded.config, inventory, PLAN, "planned").checksum(),
                         "inventory": inventory}
        out["same"] = (out["sequential"].pop("inventory") == out["concurrent"].pop("inventory")
                       and out["sequential"]["checksum"] == out["concurrent"]["checksum"])
        return out
    finally:
        connection.close()
        store.close()


def end_to_end(loaded: Any, pristine: Path, work: Path, sim_dir: Path) -> dict[str, Any]:
    state = sim_dir / "e2e-state.json"
    shutil.copyfile(pristine, state)
    run_loaded = replace(loaded, simulator_state=state)
    store = Store.for_path(work / "journal-e2e.sqlite")
    connection = connect(run_loaded)
    try:
        engine = Engine(loaded.config, connection.ports, store)
        t = time.perf_counter()
        op_id = engine.create(OperationKind.PLANNED_FAILOVER, PLAN, requested_by="bench")
        create_s = time.perf_counter() - t
        t = time.perf_counter()
        view = engine.run(op_id)
        run_s = time.perf_counter() - t
        return {"create_s": create_s, "run_s": run_s, "status": view.status, "vms": len(view.succeeded_vms)}
    finally:
        connection.close()
        store.close()


def load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"
    except OSError:
        return "?"


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-reads-"))
    shm = Path("/dev/shm")
    sim_dir = Path(tempfile.mkdtemp(prefix="bench-reads-sim-", dir=shm if shm.is_dir() else None))
    try:
        results: dict[str, Any] = {"by_hosts": {}, "load_before": load()}
        largest = max(args.hosts)
        pristine_e2e = None
        for hosts in args.hosts:
            loaded, state = world(work, sim_dir, hosts, args)
            if hosts == largest and args.end_to_end:
                pristine_e2e = sim_dir / "pristine-e2e.json"
                shutil.copyfile(state, pristine_e2e)
            rounds = [read_round(loaded, work, hosts, n) for n in range(args.rounds)]
            results["by_hosts"][hosts] = rounds
            print(f"{hosts} hosts/site: " + ", ".join(
                f"{r['sequential']['s']:.1f} s -> {r['concurrent']['s']:.1f} s" for r in rounds), file=sys.stderr)
            if hosts == largest and pristine_e2e is not None:
                results["e2e"] = end_to_end(loaded, pristine_e2e, work, sim_dir)
                results["e2e"]["hosts"] = hosts
                print(f"end to end: {results['e2e']}", file=sys.stderr)
        results["load_after"] = load()
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sim_dir, ignore_errors=True)


def report(res: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    lines = [
        "# Benchmark: reading both sites before a failover",
        "",
        f"- machine: {describe()}",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command}`",
        f"- load average (1 / 5 / 15 min) before: {res['load_before']}; after: {res['load_after']} "
        "(a machine shared with other work: the figures are paired within each round for that reason)",
        f"- world: {args.vms:,} VMs in {args.groups} groups (bench_engine's), latency model x {args.scale:g}; "
        f"{args.rounds} round(s) per size",
        "- one after another: `Engine.inventory` with concurrency limits 1 per host / 1 overall; concurrently: the "
        "config's limits (4 per host, 16 overall). The sum of the calls' own durations (as the simulator logged "
        "them) is what one after another must cost at least.",
        "",
        "| Hyper-V hosts per site | read calls | one after another (min / median) | concurrently (min / median) "
        "| speed-up (median of paired rounds) | sum of the calls' durations | same inventory and checksum |",
        "|---|---|---|---|---|---|---|",
    ]
    for hosts, rounds in res["by_hosts"].items():
        seq = [r["sequential"]["s"] for r in rounds]
        con = [r["concurrent"]["s"] for r in rounds]
        ratios = [r["sequential"]["s"] / r["concurrent"]["s"] for r in rounds]
        lines.append(
            f"| {hosts} | {rounds[0]['concurrent']['calls']} | {min(seq):.1f} / {statistics.median(seq):.1f} s "
            f"| {min(con):.1f} / {statistics.median(con):.1f} s | {statistics.median(ratios):.1f}x "
            f"| {rounds[0]['sequential']['call_s']:.1f} s | {'yes' if all(r['same'] for r in rounds) else 'NO'} |")
    if "e2e" in res:
        e = res["e2e"]
        total = e["create_s"] + e["run_s"]
        lines += [
            "",
            f"End to end at {e['hosts']} hosts per site (what `run` does after its preflight; one run): "
            f"`Engine.create` (reads, plan, journal) {e['create_s']:.1f} s + `Engine.run` (the failover alone) "
            f"{e['run_s']:.1f} s = {total:.1f} s, **{total / e['run_s']:.2f}x the failover alone** "
            f"(target < 1.5x); {e['vms']} VMs {e['status']}.",
        ]
    lines += [
        "",
        "An interactive `run` reads once: the operation is planned from the review's read (`Engine.review` -> "
        "`Engine.create(reading=...)`, checked against the reviewed checksum, read again when older than 5 min), "
        "where it used to read everything a second time after the operator's answer.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="latency scale factor (default 1: the model's)")
    parser.add_argument("--hosts", type=int, nargs="+", default=[2, 8, 32], help="Hyper-V hosts per site")
    parser.add_argument("--rounds", type=int, default=2, help="paired rounds per size")
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--no-end-to-end", dest="end_to_end", action="store_false",
                        help="skip timing create + run at the largest size")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS-reads.md"))
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings and up
    res = run(args)
    text = report(res, args, " ".join(["python tests/benchmarks/bench_reads.py", *(argv or sys.argv[1:])]))
    args.output.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
