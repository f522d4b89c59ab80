"""What the API serves from: one agent process's engine, store and role, and the workers that
run the operations its callers start.

Only the leader executes (``agent.engine.leader``): a standby answers reads from the shared
store and refuses every call that would run something with 503, naming the leader, so an
orchestrator behind a load balancer retries at the agent that can act. The leader accepts work
only once it has resumed what an earlier leader left unfinished: before that, an operation
created here could be picked up twice.

An operation is created in the request (so a refusal, a stale checksum or an unknown plan is the
caller's answer, with nothing recorded) and run by a worker thread of its own; the caller gets
202 and follows it. A prepare plans and grants addresses under the store-wide allocation lock,
as the CLI does, so its worker creates it too and hands the id back.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select

from agent.configfile import LoadedConfig
from agent.engine.leader import Leader
from agent.engine.model import OperationKind
from agent.engine.poollock import allocation_lock
from agent.engine.service import ALLOCATION_SCOPE, Engine
from agent.engine.store import IdempotencyRow, Store
from agent.errors import AgentError, RefusedError, TransientError

log = structlog.get_logger("agent.api")


class NotLeader(TransientError):
    """This agent is a standby (or still resuming): another one executes the store's operations."""

    code = "not_leader"


class IdempotencyKeyReused(RefusedError):
    code = "idempotency_key_reused"


@dataclass(frozen=True)
class Started:
    op_id: str
    replayed: bool
    """True when an earlier request with the same Idempotency-Key created it."""


class Served:
    def __init__(self, loaded: LoadedConfig, store: Store, engine: Engine, leader: Leader | None) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.store = store
        self.engine = engine
        self.leader = leader
        """None: an agent that executes without a lease contest (tests of the API alone)."""
        self.views: Any = None
        """The last view of each polled operation (``agent.api.viewcache.ViewCache``)."""
        self.inventory_cache: Any = None
        """The API's last read of the sites (``agent.api.routes.inventory.InventoryCache``)."""
        self._create_lock = threading.Lock()
        self._workers: dict[str, threading.Thread] = {}
        self._workers_lock = threading.Lock()

    # ------------------------------------------------------------------------- role

    @property
    def role(self) -> str:
        return self.leader.role if self.leader is not None else "leader"

    @property
    def accepting(self) -> bool:
        return self.leader is None or self.leader.accepting

    def require_leader(self) -> None:
        if self.accepting:
            return
        detail = "this agent is a standby"
        if self.leader is not None and self.leader.role == "leader":
            detail = "this agent is resuming the operations an earlier leader left; try again in a moment"
        elif self.leader is not None and self.leader.last_holder is not None:
            detail = f"this agent is a standby; the store's operations are run by {self.leader.last_holder}"
        raise NotLeader(detail, role=self.role)

    # ------------------------------------------------------------------- operations

    def start(self, kind: OperationKind, plan: str | None, *, caller: str, checksum: str | None,
              take_over: bool, idempotency_key: str | None, recovery_point: str | None = None) -> Started:
        """Create an operation (refused with nothing recorded if it cannot apply) and run it
        in a worker. With an Idempotency-Key, the same request again gets the same operation."""
        self.require_leader()
        # The point only when named: the keys of requests recorded before it existed still match.
        named = [recovery_point] if recovery_point else []
        request_hash = _request_hash(kind.value, plan, checksum, take_over, *named)
        with self._create_lock:  # one creation at a time: a retry waits, then finds the key
            if idempotency_key is not None:
                earlier = self._earlier(caller, idempotency_key, request_hash)
                if earlier is not None:
                    return Started(earlier, replayed=True)

            def create() -> str:
                return self.engine.create(kind, plan, requested_by=caller, expect_checksum=checksum,
                                          take_over=take_over, recovery_point=recovery_point)

            op_id = self._create_and_run(kind, create)
            if idempotency_key is not None:
                with self.store.session() as s:
                    s.add(IdempotencyRow(caller=caller, key=idempotency_key, request_hash=request_hash,
                                         operation_id=op_id))
        return Started(op_id, replayed=False)

    def _earlier(self, caller: str, key: str, request_hash: str) -> str | None:
        with self.store.session() as s:
            row = s.scalars(select(IdempotencyRow).where(IdempotencyRow.caller == caller,
                                                         IdempotencyRow.key == key)).first()
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {key!r} was used for a different request, which started operation "
                f"{row.operation_id}; use a new key for a new request", operation=row.operation_id)
        return row.operation_id

    def _create_and_run(self, kind: OperationKind, create: Callable[[], str]) -> str:
        if kind != OperationKind.PREPARE:
            op_id = create()
            self.submit(op_id)
            return op_id
        created: Future[str] = Future()

        def prepare() -> None:
            with allocation_lock(self.store, [ALLOCATION_SCOPE]):
                try:
                    op_id = create()
                except BaseException as exc:
                    created.set_exception(exc)
                    return
                created.set_result(op_id)
                self._run(op_id)

        threading.Thread(target=prepare, name="prepare", daemon=True).start()
        return created.result()

    def submit(self, op_id: str) -> None:
        """Run ``op_id`` in a worker of its own, unless this process runs it already."""
        with self._workers_lock:
            running = self._workers.get(op_id)
            if (running is not None and running.is_alive()) or self.engine.is_running(op_id):
                return
            worker = threading.Thread(target=self._run, args=(op_id,), name=f"op-{op_id}", daemon=True)
            self._workers[op_id] = worker
        worker.start()

    def _run(self, op_id: str) -> None:
        try:
            view = self.engine.run(op_id)
            log.info("operation ended", operation=op_id, status=view.status)
        except AgentError as exc:
            log.error("operation stopped", operation=op_id, error=exc.to_dict())
        except Exception:
            log.exception("operation stopped by an unexpected error", operation=op_id)

    def resume(self, op_id: str, *, caller: str) -> None:
        self.require_leader()
        self.engine.begin_resume(op_id, actor=caller)
        self.submit(op_id)

    def cancel(self, op_id: str, *, caller: str) -> None:
        self.require_leader()
        self.engine.cancel(op_id, actor=caller, compensate_now=False)
        self.submit(op_id)  # compensates it when nobody runs it; a no-op when its runner will

    def running(self) -> list[str]:
        with self._workers_lock:
            return [op for op, t in self._workers.items() if t.is_alive()]

    def stop(self, grace_s: float) -> list[str]:
        """Ask the running operations to start no new step and end once the steps in hand are
        journalled; wait up to ``grace_s`` for them; returns those still running (their steps in
        hand are journalled as begun: the next leader runs them again)."""
        self.engine.runner.stopping.set()
        with self._workers_lock:
            workers = list(self._workers.values())
        deadline = time.monotonic() + grace_s
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return self.running()


def _request_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
