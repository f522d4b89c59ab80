"""Benchmark: the leader of a 200-VM planned failover killed at a random moment, 20 times.

Run: ``python tests/benchmarks/bench_takeover.py`` (from the repository root; a few minutes).
PostgreSQL by default (``FA_TEST_PG_URL``, else the local server's socket: a fresh database per
trial); ``--sqlite`` runs it on a SQLite file instead. Writes ``tests/benchmarks/RESULTS-takeover.md``.

Each trial: the world of ``bench_engine.generate`` at 200 VMs (2 groups, latencies of its model at
``--scale``), a planned failover created in the store, two ``failover-agent serve`` processes on
it -- the first leads, the second stands by -- and the leader killed with SIGKILL at a moment drawn
after a random share of its steps were done
(drawn uniformly, ``--seed``), plus up to 0.3 s into the next. The standby takes over when the lease expires
(``--lease-s``), resumes from the journal and finishes. Takeover time is measured from the kill to
the standby's first journal write (its audit record of the operation found interrupted). The end
state of the simulated sites is compared with an uninterrupted run's, and the simulator's call log
is searched for any item changed twice. Nothing here asserts: the reader judges the numbers
against the target, lease time + 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from agent.configfile import load_config  # noqa: E402
from agent.engine.journal import Journal  # noqa: E402
from agent.engine.model import OperationKind  # noqa: E402
from agent.engine.service import Engine  # noqa: E402
from agent.engine.store import AuditRow, Store  # noqa: E402
from agent.wiring import connect  # noqa: E402
from tests.benchmarks.engine_world import PLAN, generate, set_latency  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402
from tests.rigs import changes, normalised, sim_of  # noqa: E402
from tests.stores import new_pg_database  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS-takeover.md")


@contextmanager
def store_url(kind: str, d: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{d / 'agent.sqlite'}"
        return
    urls = new_pg_database()
    url = next(urls)
    try:
        yield url
    finally:
        for _ in urls:
            pass


def world_dir(d: Path, url: str, args: argparse.Namespace) -> Path:
    d.mkdir(parents=True)
    config = generate(d, n_vms=args.vms, groups=2, hosts=4, retain_per_group=20)
    data = json.loads(config.read_text())
    data["store"] = {"url": url, "lease_s": args.lease_s}
    config.write_text(json.dumps(data, indent=1))
    loaded = load_config(config)
    conn = connect(loaded)
    set_latency(sim_of(conn), args.scale)
    conn.close()
    return config


def create(config: Path, url: str) -> str:
    loaded = load_config(config)
    conn = connect(loaded)
    store = Store.open(url)
    try:
        return Engine(loaded.config, conn.ports, store).create(OperationKind.PLANNED_FAILOVER, PLAN)
    finally:
        store.close()
        conn.close()


def serve(config: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", FAILOVER_AGENT_DATA_DIR=str(config.parent / "data"))
    return subprocess.Popen([sys.executable, "-m", "agent", "serve", "--port", "0", "--config", str(config)],
                            cwd=config.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def status(url: str, op_id: str) -> str:
    store = Store.open(url, migrate=False)
    try:
        return Journal(store).operation(op_id).status
    finally:
        store.close()


def wait(url: str, op_id: str, wanted: set[str], timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status(url, op_id) in wanted:
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"{op_id} never became {wanted}")


def outcome(config: Path, url: str, op_id: str) -> dict[str, Any]:
    loaded = load_config(config)
    conn = connect(loaded)
    try:
        world = sim_of(conn)
        twice = sum(1 for n in changes(world).values() if n > 1)
        return {"snapshot": normalised(world.snapshot()), "twice": twice, "status": status(url, op_id)}
    finally:
        conn.close()


def _steps(url: str, op_id: str) -> list[Any]:
    store = Store.open(url, migrate=False)
    try:
        return Journal(store).steps(op_id)
    finally:
        store.close()


def steps_total(url: str, op_id: str) -> int:
    return len(_steps(url, op_id))


def steps_done(url: str, op_id: str, n: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for s in _steps(url, op_id) if s.status == "succeeded") < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{op_id} never had {n} steps done")
        time.sleep(0.02)


def rnd_delay(share: float) -> float:
    """Up to 0.3 s into the step after, derived from the drawn share (reproducible per seed)."""
    return (share * 1000) % 0.3


def first_write_after(url: str, op_id: str, at: datetime) -> datetime | None:
    store = Store.open(url, migrate=False)
    try:
        with store.session() as s:
            return s.scalar(select(AuditRow.at).where(AuditRow.operation_id == op_id,
                                                      AuditRow.action == "operation.interrupted",
                                                      AuditRow.at >= at).order_by(AuditRow.at))
    finally:
        store.close()


def one(kind: str, d: Path, args: argparse.Namespace, kill_after: float | None) -> dict[str, Any]:
    with store_url(kind, d) as url:
        config = world_dir(d, url, args)
        op_id = create(config, url)
        leader = serve(config)
        started = wait(url, op_id, {"running"})
        standby = serve(config) if kill_after is not None else None
        result: dict[str, Any] = {}
        try:
            if kill_after is not None:
                # A random moment of the run: after a random share of its steps, plus a random
                # part of the next one (timed from the trial itself, not from another run).
                steps_done(url, op_id, int(kill_after * steps_total(url, op_id)))
                time.sleep(rnd_delay(kill_after))
                result["killed_after_s"] = time.monotonic() - started
                killed_at = datetime.now(UTC)
                leader.send_signal(signal.SIGKILL)
                leader.wait()
                ended = wait(url, op_id, {"succeeded", "failed", "partial"})
                first = first_write_after(url, op_id, killed_at)
                result["takeover_s"] = None if first is None else (first - killed_at).total_seconds()
                result["killed_at_share"] = kill_after
            else:
                ended = wait(url, op_id, {"succeeded", "failed", "partial"})
            result["duration_s"] = ended - started
            result.update(outcome(config, url, op_id))
        finally:
            for p in (leader, standby):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=60)
        return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    kind = "sqlite" if args.sqlite else "postgresql"
    rnd = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="bench-takeover-"))
    try:
        reference = one(kind, base / "reference", args, None)
        trials = []
        for i in range(args.trials):
            share = rnd.uniform(0.02, 0.95)
            t = one(kind, base / f"trial-{i}", args, share)
            t["same_end_state"] = t.pop("snapshot") == reference["snapshot"]
            trials.append(t)
            print(f"trial {i}: killed after {t['killed_after_s']:.2f} s, takeover {t['takeover_s']} s, {t['status']}, "
                  f"same end state {t['same_end_state']}, items changed twice {t['twice']}", file=sys.stderr)
        reference.pop("snapshot")
        return {"kind": kind, "reference": reference, "trials": trials}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def report(res: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    times = [t["takeover_s"] for t in res["trials"] if t["takeover_s"] is not None]
    target = args.lease_s + 2
    lines = [
        "# Takeover after the leader is killed (tests/benchmarks/bench_takeover.py)",
        "",
        f"- machine: {describe()}",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command}`",
        f"- store: {res['kind']}; {args.vms} VMs, planned failover, latency scale {args.scale}; "
        f"lease {args.lease_s:g} s (target: takeover within {target:g} s)",
        f"- uninterrupted run: {res['reference']['duration_s']:.2f} s, {res['reference']['status']}",
        "",
        "| | value |",
        "|---|---|",
        f"| trials | {len(res['trials'])} |",
        f"| finished by the standby (succeeded) | {sum(t['status'] == 'succeeded' for t in res['trials'])} |",
        f"| end state identical to the uninterrupted run | {sum(t['same_end_state'] for t in res['trials'])} |",
        f"| trials with an item changed twice | {sum(t['twice'] > 0 for t in res['trials'])} |",
    ]
    if times:
        lines.append(f"| takeover min / median / max (s) | {min(times):.2f} / {statistics.median(times):.2f} / "
                     f"{max(times):.2f} |")
        lines.append(f"| within the target ({target:g} s) | {sum(t <= target for t in times)} of {len(times)} |")
    lines += ["", "| trial | killed after (s) | takeover (s) | status | same end state |", "|---|---|---|---|---|"]
    for i, t in enumerate(res["trials"]):
        tk = "-" if t["takeover_s"] is None else f"{t['takeover_s']:.2f}"
        lines.append(f"| {i} | {t['killed_after_s']:.2f} | {tk} | {t['status']} | {t['same_end_state']} |")
    lines += ["", "Takeover runs from two thirds of the lease to the lease plus the standby's poll interval "
              "(min(1 s, lease/5)) and its first transaction: the leader renews every third of the lease, so "
              "its last renewal came up to lease/3 before the kill."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--vms", type=int, default=200)
    p.add_argument("--lease-s", type=float, default=5.0)
    p.add_argument("--scale", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sqlite", action="store_true", help="run on a SQLite file instead of PostgreSQL")
    p.add_argument("--no-write", action="store_true", help="print the report instead of writing RESULTS")
    args = p.parse_args(argv)
    res = run(args)
    text = report(res, args, "python tests/benchmarks/bench_takeover.py " + " ".join(argv or sys.argv[1:]))
    if args.no_write:
        print(text)
    else:
        RESULTS.write_text(text)
        print(text)


if __name__ == "__main__":
    main()
