"""Health, readiness, the audit trail and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from agent import __version__
from agent.api.auth import Caller, require
from agent.api.routes.operations import ServedDep
from agent.api.schemas import AuditPage, Health, Ready
from agent.api.served import Served
from agent.engine.model import OpStatus
from agent.engine.store import AuditRow, OperationRow, StepRow
from agent.errors import AgentError

router = APIRouter(tags=["agent"])

PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/v1/health", response_model=Health, summary="The process answers (no token needed)")
def health(s: ServedDep) -> dict[str, Any]:
    return {"status": "ok", "version": __version__, "role": s.role}


@router.get("/v1/ready", response_model=Ready, summary="Store reachable, lease held, ready to execute",
            responses={503: {"model": Ready, "description": "not ready: a standby, or the store cannot be used"}})
def ready(s: ServedDep, response: Response, _c: Annotated[Caller, Depends(require("read"))]) -> dict[str, Any]:
    checks: dict[str, dict[str, Any]] = {}
    try:
        with s.store.session() as session:
            session.execute(text("SELECT 1"))
        checks["store"] = {"ok": True}
    except AgentError as exc:
        checks["store"] = {"ok": False, "error": exc.message}
    checks["lease"] = {"ok": s.accepting, "role": s.role}
    checks["drivers"] = _drivers_check(s) if checks["store"]["ok"] else {"ok": False, "error": "store unusable"}
    if s.leader is not None and s.leader.last_holder and not s.accepting:
        checks["lease"]["holder"] = s.leader.last_holder
    ok = all(c["ok"] for c in checks.values())
    if not ok:
        response.status_code = 503
    return {"ready": ok, "role": s.role, "checks": checks}


UNREACHABLE_CODES = frozenset({"unreachable", "timeout", "transient"})


def _drivers_check(s: Served) -> dict[str, Any]:
    """From the last periodic preflight (``agent.preflight_job``), which reads every site: a
    readiness probe must not itself call every VMM and host each few seconds."""
    from agent.preflight_job import latest_report

    report = latest_report(s.store)
    if report is None:
        return {"ok": True, "checked": None, "detail": "no preflight has run yet"}
    unreachable = [p.to_dict() for p in report.problems if p.code in UNREACHABLE_CODES]
    return {"ok": not unreachable, "checked": report.at.isoformat(), "unreachable": unreachable}


@router.get("/v1/audit", response_model=AuditPage, summary="The audit trail, oldest first, paged")
def audit(s: ServedDep, _c: Annotated[Caller, Depends(require("read"))],
          after: Annotated[int, Query(ge=0, le=2**62, description="the last id of the previous page")] = 0,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100,
          operation: Annotated[str | None, Query(max_length=40)] = None,
          action: Annotated[str | None, Query(max_length=64, description="prefix, e.g. 'vmm.'")] = None,
          actor: Annotated[str | None, Query(max_length=128)] = None) -> dict[str, Any]:
    with s.store.session() as session:
        q = select(AuditRow).where(AuditRow.id > after).order_by(AuditRow.id)
        if operation:
            q = q.where(AuditRow.operation_id == operation)
        if action:
            q = q.where(AuditRow.action.startswith(action, autoescape=True))
        if actor:
            q = q.where(AuditRow.actor == actor)
        rows = list(session.scalars(q.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return {"entries": [{"id": r.id, "at": r.at.isoformat(), "operation_id": r.operation_id, "actor": r.actor,
                         "action": r.action, "target": r.target, "details": r.details} for r in rows],
            "next_after": rows[-1].id if more and rows else None}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {PROMETHEUS: {}}}})
def metrics(s: ServedDep, request: Request, _c: Annotated[Caller, Depends(require("read"))]) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(s))
    registry.register(request.app.state.remote_calls)
    return Response(generate_latest(registry), media_type=PROMETHEUS)


DNS_STEPS_SCANNED = 200


def _dns_lag_of(session: Any) -> dict[str, float]:
    """Per authoritative server, how long the newest verified DNS step waited for it to answer
    the new data (the step's journalled verification: ``agent.dns.verify``)."""
    rows = session.execute(select(StepRow.outcome).where(StepRow.action.startswith("dns."),
                                                         StepRow.outcome.is_not(None))
                           .order_by(StepRow.id.desc()).limit(DNS_STEPS_SCANNED))
    lag: dict[str, float] = {}
    for (outcome,) in rows:
        verification = ((outcome or {}).get("info") or {}).get("verification") or {}
        for server in verification.get("servers") or ():
            if isinstance(server, dict) and "server" in server and server["server"] not in lag:
                lag[str(server["server"])] = float(server.get("waited_s") or 0.0)
    return lag


class RemoteCalls(Collector):
    """Latency of the engine's remote calls by endpoint and kind (``agent.remotecalls`` observes
    every call; this keeps a histogram of them for as long as the process runs)."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, str], list[float]] = {}
        """(endpoint, kind, outcome) -> bucket counts, then sum and count."""

    def observe(self, endpoint: str, kind: str, call: str, duration_s: float, ok: bool) -> None:
        key = (endpoint, kind, "ok" if ok else "error")
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.BUCKETS) + 2))
            for i, bound in enumerate(self.BUCKETS):
                if duration_s <= bound:
                    series[i] += 1
            series[-2] += duration_s
            series[-1] += 1

    def collect(self) -> Iterator[Any]:
        family = HistogramMetricFamily("failover_agent_remote_call_duration_seconds",
                                       "Remote calls to VMM, Hyper-V hosts, DNS servers and routers",
                                       labels=["endpoint", "kind", "outcome"])
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        for key, series in items:
            buckets = [(str(b), series[i]) for i, b in enumerate(self.BUCKETS)] + [("+Inf", series[-1])]
            family.add_metric(list(key), buckets, series[-2])
        yield family


@router.get("/v1/preflight", summary="The last periodic preflight: what would fail if run now")
def preflight(s: ServedDep, _c: Annotated[Caller, Depends(require("read"))]) -> dict[str, Any]:
    from agent.preflight_job import latest_report

    report = latest_report(s.store)
    return {"report": report.to_dict() if report is not None else None}


class StoreCollector(Collector):
    """Read at scrape time from the store (shared by every agent of a site, so any of them
    answers the same) and from what this process last read of the sites."""

    def __init__(self, served: Served) -> None:
        self.served = served

    def _dns_lag(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("failover_agent_dns_verification_lag_seconds",
                                   "How long the last verified DNS update waited for each authoritative server",
                                   labels=["server"])
        with self.served.store.session() as session:
            for server, waited in sorted(_dns_lag_of(session).items()):
                family.add_metric([server], waited)
        return family

    def collect(self) -> Iterator[Any]:
        s = self.served
        ops = GaugeMetricFamily("failover_agent_operations", "Operations in the store by status and kind",
                                labels=["status", "kind"])
        steps = SummaryMetricFamily("failover_agent_step_duration_seconds", "Durations of finished steps by action",
                                    labels=["action"])
        with s.store.session() as session:
            counts = {(st, kind): n for st, kind, n in session.execute(
                select(OperationRow.status, OperationRow.kind, func.count()).group_by(OperationRow.status,
                                                                                       OperationRow.kind))}
            finished = list(session.execute(select(StepRow.action, StepRow.started_at, StepRow.finished_at).where(
                StepRow.started_at.is_not(None), StepRow.finished_at.is_not(None))))
        for status in OpStatus:
            for kind in sorted({k for _, k in counts} or {"none"}):
                if (status.value, kind) in counts or kind == "none":
                    ops.add_metric([status.value, kind], counts.get((status.value, kind), 0))
        by_action: dict[str, tuple[int, float]] = {}
        for action, started, ended in finished:
            if started is None or ended is None:
                continue
            n, total = by_action.get(action, (0, 0.0))
            by_action[action] = (n + 1, total + max(0.0, (ended - started).total_seconds()))
        for action, (n, total) in sorted(by_action.items()):
            steps.add_metric([action], n, total)
        yield ops
        yield steps
        yield self._dns_lag()
        leader = InfoMetricFamily("failover_agent_lease", "This agent's role and who holds the store's lease")
        holder = s.leader.last_holder if s.leader is not None else None
        leader.add_metric([], {"role": s.role, "holder": holder or ("this agent" if s.accepting else "")})
        yield leader
        inv = s.inventory_cache.last if s.inventory_cache is not None else None
        if inv is not None:
            from agent.domain.ipam import pool_usage

            free = GaugeMetricFamily("failover_agent_pool_free_addresses",
                                     "Free addresses per static IP pool, as last read", labels=["site", "pool"])
            for pool, _used, count in pool_usage(inv.pools, inv.grants):
                free.add_metric([pool.site, pool.name], count)
            yield free
