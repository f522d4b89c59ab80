"""Retrying port calls on transient errors: the one retry loop of the engine.

A step's calls (:meth:`agent.engine.actions.base.ActionContext.call`) and the reads that plan
an operation (:func:`retrying_ports`) both go through :func:`call_with_retries`. Retrying is
safe because every port is idempotent: a call whose first attempt timed out after taking effect
finds, the second time, that nothing is left to do. Planning without retries would let one
transient error in any of its many reads refuse the whole operation before it starts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeVar, cast

import structlog

from agent.config import RetryPolicy
from agent.errors import TransientError
from agent.ports import Ports

log = structlog.get_logger("agent.engine")

R = TypeVar("R")
P = TypeVar("P")


def backoff_delays(policy: RetryPolicy, rng: random.Random | None = None) -> list[float]:
    """Delays between attempts: exponential, capped, with full jitter on the upper half."""
    rng = rng or random.Random()
    delays, delay = [], policy.initial_backoff_s
    for _ in range(policy.attempts - 1):
        capped = min(delay, policy.max_backoff_s)
        delays.append(capped / 2 + rng.random() * capped / 2)
        delay *= policy.multiplier
    return delays


def call_with_retries(what: str, fn: Callable[[], R], policy: RetryPolicy, sleep: Callable[[float], None],
                      on_retry: Callable[[int, TransientError], None] | None = None) -> R:
    """``fn()``, repeated after each :class:`TransientError` until the policy's attempts are
    spent (then the last error is raised). ``on_retry(attempt, error)`` hears of each retry."""
    delays = backoff_delays(policy)
    for attempt, delay in enumerate(delays, start=1):
        try:
            return fn()
        except TransientError as exc:
            log.warning("transient error, retrying", call=what, attempt=attempt, code=exc.code, error=exc.message)
            if on_retry is not None:
                on_retry(attempt, exc)
            sleep(delay)
    return fn()


class RetryingPort:
    """A port whose every method call goes through :func:`call_with_retries`."""

    def __init__(self, port: object, policy: RetryPolicy, sleep: Callable[[float], None]) -> None:
        self._port = port
        self._policy = policy
        self._sleep = sleep

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._port, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return call_with_retries(name, lambda: attr(*args, **kwargs), self._policy, self._sleep)

        return call


def retrying_ports(ports: Ports, policy: RetryPolicy, sleep: Callable[[float], None]) -> Ports:
    """``ports`` with every call retried on transient errors: for the reads that plan an
    operation (never for a step's own calls, which retry through their context)."""

    def wrap(port: P) -> P:
        # Same interface by construction: every attribute is the port's own, calls retried.
        return cast(P, RetryingPort(port, policy, sleep))

    return ports.wrapped(wrap)
