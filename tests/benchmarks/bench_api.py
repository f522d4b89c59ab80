"""Benchmark: ``GET /v1/operations/{id}`` at 200 requests/s while a 1,000-VM failover runs.

Run: ``python tests/benchmarks/bench_api.py`` (from the repository root; about three minutes).
Writes ``tests/benchmarks/RESULTS-api.md``. Nothing here asserts: a benchmark reports numbers,
the reader judges them against the target (p99 < 20 ms under load). ``--help`` lists the knobs.

The server is a real ``failover-agent serve`` subprocess (uvicorn, the leader loop, the engine
and the simulated sites in one process, as an operator runs it) on a generated config: the
1,000-VM world of ``bench_engine.generate`` with the latency model of ``bench_engine`` at
``--scale``, a SQLite journal on disk, two API tokens (read, operate) in ``api.tokens``. Its
simulator state goes to ``/dev/shm`` when there is one, as in ``bench_engine``.

A planned failover of the 1,000 VMs is started through the API (``POST /v1/operations``) and runs
in the server while the load is measured; the report gives when it ran and when the window was,
and whether it was running at both ends of the window. Then, with the operation finished and
nothing running, the same load again on the same operation (whose journal is now complete):
the baseline.

The load generator is a process of its own (so it does not share a GIL with the server), with
``--threads`` threads, each one keep-alive connection (httpx). The schedule is open-loop: request
``k`` is due at ``t0 + k / rate``; the first free thread takes the next request due and sends it at
its time (or at once if it is late), and each latency is measured from the time the request was
*due*, not from when it was sent, so a stall of the server shows as the latencies of all the
requests it delayed (no coordinated omission). ``--warmup`` seconds of the same load come first
and are not counted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import statistics
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

import httpx  # noqa: E402

from agent.api.auth import new_token, token_hash  # noqa: E402
from agent.configfile import load_config  # noqa: E402
from agent.wiring import connect  # noqa: E402
from tests.benchmarks.bench_engine import PLAN, generate, set_latency  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402
from tests.rigs import sim_of  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS-api.md")
TARGET_P99_MS = 20.0
RUNNING = {"pending", "running"}


# ------------------------------------------------------------------------------ the server


def world(d: Path, args: argparse.Namespace) -> tuple[Path, dict[str, str]]:
    """The generated 1,000-VM world with its latency model and API tokens; the config path and
    the tokens (scope -> token)."""
    config = generate(d, n_vms=args.vms)
    data = json.loads(config.read_text())
    tokens = {scope: new_token() for scope in ("read", "operate")}
    data["api"] = {"tokens": [{"name": f"bench-{scope}", "sha256": token_hash(t), "scopes": [scope]}
                              for scope, t in tokens.items()]}
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        sim_dir = Path(tempfile.mkdtemp(prefix="bench-api-sim-", dir=shm))
        data["simulator"]["state"] = str(sim_dir / "sim-state.json")
    config.write_text(json.dumps(data, indent=1))
    conn = connect(load_config(config))
    set_latency(sim_of(conn), args.scale)
    conn.close()
    return config, tokens


def serve(config: Path, log: Path, profile: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``failover-agent serve`` on ``config`` at a free port; the process and its base URL.
    ``profile``: run it under cProfile in every thread (:func:`profiled_serve`), stats written there."""
    # This checkout's agent, not whichever one is installed (the serve runs in the world's directory).
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    # stderr to a file, not a pipe: nobody would drain a pipe while measuring, and a full pipe
    # would stall the server's logging.
    with log.open("wb") as err:
        program = ["-m", "agent"] if profile is None else [__file__, "--profiled-serve", str(profile), "--"]
        proc = subprocess.Popen([sys.executable, *program, "serve", "--port", "0", "--config", str(config)],
                                cwd=config.parent, stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "API: http://" in line:
                return proc, line.split("API: ", 1)[1].split("/ ", 1)[0]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"serve did not start: {log.read_text(errors='replace')[-2000:]}")


def profiled_serve(out: Path, argv: list[str]) -> None:
    """The agent's CLI with every thread under cProfile (cProfile alone sees only the main one:
    uvicorn's loop, the thread pool of sync routes and the step workers are threads); the merged
    stats go to ``out`` at exit."""
    import atexit
    import contextlib
    import cProfile
    import pstats

    profiles: list[cProfile.Profile] = []

    def start(*_: Any) -> None:  # each new thread's first profile event: a profiler of its own
        prof = cProfile.Profile(time.thread_time)  # CPU, not wall: the threads wait on each other's GIL
        profiles.append(prof)
        prof.enable()  # replaces this hook in that thread

    def dump() -> None:
        for prof in profiles:
            prof.disable()  # daemon threads still running at exit
        stats = pstats.Stats(main_prof)
        for prof in profiles:
            with contextlib.suppress(TypeError, ValueError):  # a profile that never ran
                stats.add(prof)
        stats.dump_stats(str(out))

    threading.setprofile(start)
    main_prof = cProfile.Profile(time.thread_time)
    atexit.register(dump)
    sys.argv = ["failover-agent", *argv]
    from agent.cli import main as cli_main

    main_prof.enable()
    try:
        cli_main()
    finally:
        main_prof.disable()


def cpu_s(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux), else NaN."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_failover(url: str, token: str, timeout_s: float = 600) -> tuple[str, float]:
    """POST a planned failover of the plan, retrying while the agent is not yet leading; its id
    and how long the accepted POST took (the operation is planned inside the request)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s) as c:
        deadline = time.monotonic() + 60
        while True:
            t = time.perf_counter()
            r = c.post("/v1/operations", json={"kind": "planned_failover", "plan": PLAN})
            took = time.perf_counter() - t
            if r.status_code == 202:
                return str(r.json()["id"]), took
            if r.status_code != 503 or time.monotonic() > deadline:
                raise RuntimeError(f"POST /v1/operations: {r.status_code} {r.text[:2000]}")
            time.sleep(0.2)


def get_op(url: str, token: str, op_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/operations/{op_id}", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    r.raise_for_status()
    op: dict[str, Any] = r.json()
    return op


def wait_ended(url: str, token: str, op_id: str, timeout_s: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        op = get_op(url, token, op_id)
        if op["status"] not in RUNNING:
            return op
        if time.monotonic() > deadline:
            raise RuntimeError(f"{op_id} still {op['status']} after {timeout_s} s")
        time.sleep(1)


# ------------------------------------------------------------------------ the load generator


def load(url: str, token: str, path: str, rate: float, duration_s: float, warmup_s: float,
         threads: int) -> dict[str, Any]:
    """Open-loop load at ``rate`` requests/s; runs in a process of its own (see the module doc)."""
    warm_n, total = int(warmup_s * rate), int((warmup_s + duration_s) * rate)
    lock = threading.Lock()
    nxt = [0]
    records: list[tuple[int, float, float, float, int, int]] = []  # k, due, sent, end, status, bytes
    errors: list[str] = []
    statuses: dict[int, str] = {}  # k -> the operation's status in that answer (first and last only)
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.Client(base_url=url, headers=headers, timeout=30) for _ in range(threads)]
    for c in clients:  # open each keep-alive connection before the clock starts
        c.get("/v1/health").raise_for_status()
    t0 = time.perf_counter() + 0.2
    wall0 = time.time() + 0.2
    # A server that cannot keep up would keep the generator sending its backlog for ever: what is
    # not sent by twice the schedule's length (and 10 s) is counted as failed, never as fast.
    give_up = t0 + 2 * (warmup_s + duration_s) + 10
    not_sent = [0]
    answered = [0]  # answers to warm-up requests too: the server's CPU time is divided by it

    def worker(client: httpx.Client) -> None:
        while True:
            with lock:
                k = nxt[0]
                nxt[0] += 1
            if k >= total:
                return
            due = t0 + k / rate
            if time.perf_counter() > give_up:
                with lock:
                    not_sent[0] += k >= warm_n
                continue
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            sent = time.perf_counter()
            try:
                r = client.get(path)
                body = r.content
                end = time.perf_counter()
                code, size = r.status_code, len(body)
            except httpx.HTTPError as exc:
                end, code, size = time.perf_counter(), 0, 0
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
            with lock:
                answered[0] += code != 0
            if k < warm_n:
                continue
            with lock:
                records.append((k, due, sent, end, code, size))
            if code == 200 and k in (warm_n, total - 1):
                statuses[k] = json.loads(body)["status"]

    pool = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    for c in clients:
        c.close()
    records.sort()
    if not records:  # not one answer before the cut-off: no latency to give, only that
        nan = float("nan")
        none = {"p50": nan, "p90": nan, "p99": nan, "max": nan, "mean": nan}
        return {"requests": not_sent[0], "ok": 0, "errors": not_sent[0], "error_samples": [*errors[:5],
                    f"{not_sent[0]} not sent: the server had not caught up by the cut-off"],
                "window_s": nan, "achieved_rps": 0.0, "latency_ms": none, "service_ms": none, "send_late_ms": none,
                "over_target": not_sent[0], "bytes_median": 0, "status_first": None, "status_last": None,
                "window_wall": [wall0, wall0 + 2 * (warmup_s + duration_s) + 10], "not_sent": not_sent[0],
                "answered": answered[0]}
    lat = sorted((end - due) * 1000 for _, due, _, end, _, _ in records)
    service = sorted((end - sent) * 1000 for _, _, sent, end, _, _ in records)
    late = sorted((sent - due) * 1000 for _, due, sent, _, _, _ in records)
    ok = [r for r in records if r[4] == 200]
    first_due, last_end = records[0][1], max(r[3] for r in records)
    return {
        "requests": len(records) + not_sent[0], "ok": len(ok), "errors": len(records) - len(ok) + not_sent[0],
        "error_samples": errors[:5] + [f"HTTP {r[4]}" for r in records if r[4] not in (0, 200)][:5]
        + ([f"{not_sent[0]} not sent: the server had not caught up by the cut-off"] if not_sent[0] else []),
        "window_s": last_end - first_due, "achieved_rps": len(records) / (last_end - first_due),
        "latency_ms": summary(lat), "service_ms": summary(service), "send_late_ms": summary(late),
        "over_target": sum(1 for v in lat if v >= TARGET_P99_MS),
        "bytes_median": statistics.median(r[5] for r in ok) if ok else 0,
        "status_first": statuses.get(warm_n), "status_last": statuses.get(total - 1),
        "window_wall": [wall0 + (first_due - t0), wall0 + (last_end - t0)],
        "not_sent": not_sent[0], "answered": answered[0],
    }


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values`` (nearest rank: a value that was measured)."""
    return values[min(len(values) - 1, max(0, int(q * len(values) + 0.999999) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": quantile(values, 0.50), "p90": quantile(values, 0.90), "p99": quantile(values, 0.99),
            "max": values[-1], "mean": statistics.fmean(values)}


def _load_process(conn: Any, *params: Any) -> None:
    conn.send(load(*params))
    conn.close()


def measure(url: str, token: str, op_id: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """The load in a spawned process (its own interpreter, its own GIL), with the server's CPU
    time over the same interval."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_load_process, args=(theirs, url, token, f"/v1/operations/{op_id}", args.rate,
                                                   args.duration, args.warmup, args.threads))
    cpu0, t0 = cpu_s(pid), time.perf_counter()
    proc.start()
    res: dict[str, Any] = ours.recv()
    proc.join()
    cpu = cpu_s(pid) - cpu0
    res["server_cpu_share"] = cpu / (time.perf_counter() - t0)
    res["server_cpu_ms_per_answer"] = 1000 * cpu / res["answered"] if res["answered"] else float("nan")
    return res


# ------------------------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-api-"))
    config, tokens = world(base, args)
    sim_state = json.loads(config.read_text())["simulator"]["state"]
    proc, url = serve(config, base / "serve.log", args.profile)
    res: dict[str, Any] = {"url": url}
    try:
        posted = time.time()
        op_id, res["post_s"] = start_failover(url, tokens["operate"])
        accepted = time.time()
        print(f"{op_id} accepted after {res['post_s']:.1f} s; measuring under load", file=sys.stderr)
        res["load"] = (measure(url, tokens["read"], op_id, proc.pid, args) if not args.baseline_only
                       else None)
        if res["load"] is not None:
            print(f"under load: {_line(res['load'])}", file=sys.stderr)
        op = wait_ended(url, tokens["read"], op_id)
        ended = time.time()
        res["op"] = {"id": op_id, "status": op["status"], "steps": len(op["steps"]), "posted": posted,
                     "accepted": accepted, "ended_by": ended, "created_at": op["created_at"],
                     "finished_at": op["finished_at"], "elapsed_s": op["elapsed_s"],
                     "failed_vms": len(op["failed_vms"]), "succeeded_vms": len(op["succeeded_vms"])}
        res["baseline"] = measure(url, tokens["read"], op_id, proc.pid, args)
        print(f"baseline: {_line(res['baseline'])}", file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
            if sim_state.startswith("/dev/shm/"):
                shutil.rmtree(Path(sim_state).parent, ignore_errors=True)
    return res


def _line(m: dict[str, Any]) -> str:
    lat = m["latency_ms"]
    return (f"p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f}, p99 {lat['p99']:.1f}, max {lat['max']:.1f}; "
            f"{m['achieved_rps']:.1f} req/s, {m['errors']} errors; server CPU {m['server_cpu_ms_per_answer']:.2f} ms "
            f"per answer, {m['server_cpu_share']:.2f} cores")


# --------------------------------------------------------------------------------- report


def _at(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]


def report(res: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    op, under, idle = res["op"], res["load"], res["baseline"]
    finished = datetime.fromisoformat(op["finished_at"]).timestamp() if op["finished_at"] else None
    w0, w1 = under["window_wall"]
    # The last request may not have been answered (cut off): the operation's own finish decides.
    covered = under["status_first"] == "running" and (finished is None or finished > w1)
    met = under["latency_ms"]["p99"] < TARGET_P99_MS and under["errors"] == 0

    def row(name: str, key: str, sub: str, fmt: str = "{:.1f}") -> str:
        return f"| {name} | {fmt.format(under[key][sub])} | {fmt.format(idle[key][sub])} |"

    lines = [
        "# API latency: GET /v1/operations/{id} at 200 requests/s (tests/benchmarks/bench_api.py)",
        "",
        f"- machine: {describe()}; load average at the end {os.getloadavg()[0]:.2f} (1 min)",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command}`",
        f"- server: `failover-agent serve` subprocess on a generated config ({args.vms} VMs in 10 groups, "
        f"SQLite journal on disk, simulator state in /dev/shm), latency model of bench_engine at scale "
        f"{args.scale:g}",
        f"- load: open-loop {args.rate:g} requests/s for {args.duration:g} s after {args.warmup:g} s of warm-up, "
        f"{args.threads} threads in a separate process, one keep-alive connection each; latency from the "
        "time each request was due",
        f"- the operation: planned failover {op['id']} of {op['steps']} steps, POST accepted after "
        f"{res['post_s']:.1f} s (planning happens in the request); created {op['created_at']}, "
        f"finished {op['finished_at']} ({op['elapsed_s']:.1f} s from creation), {op['status']}, "
        f"{op['succeeded_vms']} VMs succeeded, {op['failed_vms']} failed",
        f"- measurement window under load: {_at(w0)} to {_at(w1)} UTC ({under['window_s']:.1f} s); the operation "
        f"was {under['status_first'] or '(not answered)'} at the window's first request and "
        f"{under['status_last'] or '(not answered)'} at its last"
        + ("" if finished is None else f"; it finished {finished - w1:.1f} s after the window ended")
        + (": **it ran during the whole window**" if covered else ": **NOT running for the whole window**"),
        "",
        f"**Target (p99 < {TARGET_P99_MS:g} ms under load): {'met' if met else 'NOT met'}** "
        f"(p99 {under['latency_ms']['p99']:.1f} ms, {under['errors']} errors)",
        "",
        "| | under load (failover running) | baseline (nothing running) |",
        "|---|---|---|",
        f"| requests measured | {under['requests']} | {idle['requests']} |",
        f"| errors (non-200 or transport) | {under['errors']} | {idle['errors']} |",
        f"| achieved rate (req/s) | {under['achieved_rps']:.1f} | {idle['achieved_rps']:.1f} |",
        row("latency p50 (ms)", "latency_ms", "p50"),
        row("latency p90 (ms)", "latency_ms", "p90"),
        row("**latency p99 (ms)**", "latency_ms", "p99"),
        row("latency max (ms)", "latency_ms", "max"),
        row("latency mean (ms)", "latency_ms", "mean"),
        f"| requests at or over {TARGET_P99_MS:g} ms | {under['over_target']} | {idle['over_target']} |",
        row("service time p50, from the send (ms)", "service_ms", "p50"),
        row("service time p99, from the send (ms)", "service_ms", "p99"),
        row("sent late, p99 (ms; the generator's own lag)", "send_late_ms", "p99"),
        f"| response body, median (bytes) | {under['bytes_median']:.0f} | {idle['bytes_median']:.0f} |",
        f"| server CPU over the window (cores) | {under['server_cpu_share']:.2f} | {idle['server_cpu_share']:.2f} |",
        f"| server CPU per answered request (ms; the failover's own CPU included under load) | "
        f"{under['server_cpu_ms_per_answer']:.1f} | {idle['server_cpu_ms_per_answer']:.1f} |",
    ]
    samples = under["error_samples"] + idle["error_samples"]
    if samples:
        lines += ["", "Errors seen: " + "; ".join(samples)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per window (default 20)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each window, not counted")
    p.add_argument("--threads", type=int, default=8, help="load threads, one keep-alive connection each")
    p.add_argument("--vms", type=int, default=1000)
    p.add_argument("--scale", type=float, default=0.5,
                   help="latency model scale (default 0.5: the failover runs about a minute, past the window)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (config, journal, serve.log)")
    p.add_argument("--no-write", action="store_true", help="print the report, leave RESULTS-api.md alone")
    p.add_argument("--profile", type=Path, default=None,
                   help="run the server under cProfile (all threads) and write the stats here")
    p.add_argument("--baseline-only", action="store_true", help="measure only with nothing running (profiling)")
    p.add_argument("--profiled-serve", type=Path, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--profiled-serve":  # the server's side of --profile
        profiled_serve(Path(argv[1]), argv[3:])
        return
    args = p.parse_args(argv)
    given = " ".join(argv if argv is not None else sys.argv[1:])
    command = ("python tests/benchmarks/bench_api.py " + given).rstrip()
    res = run(args)
    if res["load"] is None:  # --baseline-only: a profiling run, not a result
        print(f"baseline: {_line(res['baseline'])}")
        return
    text = report(res, args, command)
    if not args.no_write:
        RESULTS.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
