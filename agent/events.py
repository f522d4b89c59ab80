"""The one seam for operation events: what happened to an operation (or a test failover, or a
preflight), handed to whoever wants to know -- the notifier (:mod:`agent.notify`), later others.

An :class:`Event` is a small immutable value; an :class:`EventSink` takes it with ``emit``. A
sink must return at once and must not raise: the engine emits in the middle of an operation,
and a notification must never break or slow a failover. :func:`emit_safely` is how every
emitter calls a sink, so a sink that breaks that rule anyway is logged, never raised.

Kinds (``Event.kind``):

* ``operation.started`` -- an operation starts running: from ``pending`` (its first run), or
  again after it ``failed`` or was ``interrupted`` (``details.resumed_from``). Continuing after
  a pause is not a start: the pause was the event.
* ``operation.paused`` -- it waits: for an operator's manual action (``details.instruction``,
  ``details.manual`` true) or for the outside orchestrator (``manual`` false). Emitted once
  per pause: resuming a wait that goes on waiting at the same step is the same pause; a second
  manual step later in the plan is a new one.
* ``operation.failed`` -- it stopped at an error (``details.errors``, ``details.failed_vms``);
  it can be started again.
* ``operation.succeeded`` / ``operation.partially_succeeded`` -- it finished; the second is a
  kind of its own, so that a receiver listening for success is never told "succeeded" about a
  run that left VMs behind (``details.failed_vms``).
* ``test_failover.expiring`` -- a test failover nears its maximum age and will be cleaned up
  by force at ``details.expires_at`` (scheduled by :mod:`agent.scheduler`).
* ``preflight.problems`` -- a preflight found problems (:func:`preflight_problems`).

A cancelled operation is not notified: whoever cancelled it knows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, get_args

import structlog

log = structlog.get_logger("agent.events")

EventKind = Literal[
    "operation.started",
    "operation.paused",
    "operation.failed",
    "operation.succeeded",
    "operation.partially_succeeded",
    "test_failover.expiring",
    "preflight.problems",
]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)

MAX_LISTED = 20
"""At most this many errors or problems are carried in an event's details (with the total):
a notification says what happened, the operation's report says everything."""


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return f"evt-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, once. ``id`` is unique per event: a receiver that got the same
    id twice (a delivery retried after a lost answer) drops the second."""

    kind: EventKind
    operation_id: str | None = None
    plan: str | None = None
    operation_kind: str | None = None
    status: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=_now)
    id: str = field(default_factory=_new_id)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "time": self.time.isoformat(), "operation_id": self.operation_id,
                "plan": self.plan, "operation_kind": self.operation_kind, "status": self.status,
                "details": dict(self.details)}

    def summary(self) -> str:
        """One line for a person: an e-mail's subject."""
        what = {
            "operation.started": "started",
            "operation.paused": "paused, waiting for " + (
                "a manual action" if self.details.get("manual") else "the orchestrator"),
            "operation.failed": "failed",
            "operation.succeeded": "succeeded",
            "operation.partially_succeeded": "partially succeeded",
            "test_failover.expiring": "nears its maximum age: cleaned up by force at "
                                      f"{self.details.get('expires_at', '?')}",
            "preflight.problems": f"preflight found {self.details.get('count', 0)} problem(s)",
        }[self.kind]
        subject = " ".join(p for p in (
            (self.operation_kind or "").replace("_", " ") or None, self.operation_id,
            f"of plan {self.plan}" if self.plan else None) if p)
        return f"{subject or 'failover-agent'} {what}"


class EventSink(Protocol):
    """Takes events. ``emit`` must return at once (queue, do not deliver) and must not raise."""

    def emit(self, event: Event) -> None: ...


def emit_safely(sink: EventSink | None, event: Event) -> None:
    """Hand ``event`` to ``sink``; a sink that raises is logged and the caller goes on."""
    if sink is None:
        return
    try:
        sink.emit(event)
    except Exception as exc:  # a notification must never break an operation
        log.error("event not handed to its sink", kind=event.kind, event_id=event.id, operation=event.operation_id,
                  sink=type(sink).__name__, error=type(exc).__name__)


class FanOut:
    """A sink that hands each event to several; one that fails does not keep it from the others."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            emit_safely(sink, event)


# ------------------------------------------------------------------------ constructors


def operation_event(kind: EventKind, *, operation_id: str, plan: str, operation_kind: str, status: str,
                    **details: Any) -> Event:
    return Event(kind=kind, operation_id=operation_id, plan=plan, operation_kind=operation_kind, status=status,
                 details=details)


def test_failover_expiring(*, operation_id: str, plan: str, status: str, expires_at: datetime,
                           max_age_s: float) -> Event:
    return Event(kind="test_failover.expiring", operation_id=operation_id, plan=plan,
                 operation_kind="test_failover", status=status,
                 details={"expires_at": expires_at.isoformat(), "max_age_s": max_age_s})


class _Problem(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def preflight_problems(problems: Iterable[_Problem | Mapping[str, Any]], *, plan: str | None = None,
                       operation_kind: str | None = None, site: str | None = None) -> Event:
    """The ``preflight.problems`` event, for whoever runs a preflight and finds problems.

    ``problems``: the failures (``PreflightReport.problems`` of :mod:`agent.preflight`, or dicts
    of the same shape: ``kind``, ``target``, ``key``, ``detail``, ``code`` ...). ``plan`` and
    ``operation_kind``: what the preflight was for, if for one operation (None for the periodic
    preflight of everything the config names). ``site``: the agent's site. Emit it with
    ``emit_safely(engine.events, preflight_problems(report.problems, site=...))``; emitting an
    event with no problems is the caller's mistake, so an empty list is refused here."""
    found = [p.to_dict() if not isinstance(p, Mapping) else dict(p) for p in problems]
    if not found:
        raise ValueError("a preflight.problems event needs at least one problem")
    return Event(kind="preflight.problems", plan=plan, operation_kind=operation_kind,
                 details={"site": site, "count": len(found), "problems": found[:MAX_LISTED]})
