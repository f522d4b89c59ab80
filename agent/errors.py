"""The agent's error hierarchy, sorted by what the caller does next.

One root, :class:`AgentError`, then three families:

* :class:`RefusedError` -- the request is refused before anything changed (bad config, a plan
  that breaks a rule of the source documents, bad API input). Fix the input and ask again.
* :class:`TransientError` -- the outside system may well accept the same call later (timeout,
  connection refused, SERVFAIL, a VMM job that is busy). The engine retries with backoff.
* :class:`PermanentError` -- the outside system refused the call and will refuse it again
  (address already granted, unknown VM, bad TSIG key). The engine applies the operation's error
  policy: stop at the first error, or carry on and report.

Every error carries a stable ``code`` (used by the API and the journal) and structured
``fields`` naming what it is about (vm, nic, pool, record, host, ...), so nobody has to parse
the message. Foreign exceptions are wrapped with ``raise ... from``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

Category = Literal["refused", "transient", "permanent"]


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""

    code: ClassVar[str] = "agent_error"
    category: ClassVar[Category] = "permanent"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}

    @property
    def transient(self) -> bool:
        return self.category == "transient"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "category": self.category, "message": self.message, **self.fields}

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # keep code/fields across pickling (APScheduler, process pools)
        return (_rebuild, (type(self), self.message, self.fields))


def _rebuild(cls: type[AgentError], message: str, fields: dict[str, Any]) -> AgentError:
    return cls(message, **fields)


class RefusedError(AgentError):
    """Refused before anything changed anywhere."""

    code = "refused"
    category = "refused"


class TransientError(AgentError):
    """May succeed if the same call is made again later."""

    code = "transient"
    category = "transient"


class PermanentError(AgentError):
    """The outside system refused; asking again the same way will not help."""

    code = "permanent"
    category = "permanent"


class TimeoutError_(TransientError):
    """A call did not answer in time. Whether it took effect is unknown: re-read state."""

    code = "timeout"


class UnreachableError(TransientError):
    """The target host or server could not be reached (connection refused, no route)."""

    code = "unreachable"


class NotFoundError(PermanentError):
    """A named object (VM, NIC, network, pool, zone, router, operation) does not exist."""

    code = "not_found"


class ConflictError(PermanentError):
    """The object exists in a state that forbids the call (already granted, already running)."""

    code = "conflict"


def make_error(code: str, category: Category, message: str, **fields: Any) -> AgentError:
    """An error with a code that needs no class of its own (e.g. rebuilt from the journal)."""

    base = {"refused": RefusedError, "transient": TransientError, "permanent": PermanentError}[category]
    err = base(message, **fields)
    err.code = code  # type: ignore[misc]  # instance attribute shadows the class default
    return err
