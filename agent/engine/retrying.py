"""Port calls made outside a step -- the reads that plan an operation -- with the same retry
policy as a step's calls (:meth:`agent.engine.runner.ActionContext.call`).

Planning reads every VMM, Hyper-V host, DNS zone and router once; without retries a single
transient error in any of those reads refuses the whole operation before it starts. Retrying is
safe because planning only reads.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import structlog

from agent.config import RetryPolicy
from agent.engine.runner import backoff_delays
from agent.errors import TransientError

log = structlog.get_logger("agent.engine")


class RetryingPort:
    """Wraps a port: every method call is repeated on :class:`TransientError`, with backoff,
    until the policy's attempts are spent (then the last error is raised)."""

    def __init__(self, port: Any, policy: RetryPolicy, sleep: Callable[[float], None]) -> None:
        self._port = port
        self._policy = policy
        self._sleep = sleep

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._port, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            delays = backoff_delays(self._policy)
            for attempt in range(len(delays) + 1):
                try:
                    return attr(*args, **kwargs)
                except TransientError as exc:
                    if attempt == len(delays):
                        raise
                    log.warning("transient error while planning, retrying", call=name, attempt=attempt + 1,
                                code=exc.code, error=exc.message)
                    self._sleep(delays[attempt])
            raise AssertionError("unreachable")

        return call


def retrying_drivers(drivers: Any, policy: RetryPolicy, sleep: Callable[[float], None]) -> Any:
    """A read-only view of ``drivers`` whose VMM, Hyper-V, DNS and routes ports retry."""

    def wrap(port: Any) -> Any:
        return RetryingPort(port, policy, sleep)

    return SimpleNamespace(
        vmm={k: wrap(v) for k, v in drivers.vmm.items()},
        hyperv={k: wrap(v) for k, v in drivers.hyperv.items()},
        dns={k: wrap(v) for k, v in drivers.dns.items()},
        routes=wrap(drivers.routes),
        scripts=getattr(drivers, "scripts", None),
        world=getattr(drivers, "world", None),
    )
