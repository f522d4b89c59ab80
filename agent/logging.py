"""Logging, configured in one place: structlog, JSON to stderr when stderr is not a terminal.

Everything the agent logs goes through :func:`redact_secrets`, so a secret reference or a value
under a key such as ``password`` or ``token`` never reaches a log line, whichever library logged
it (stdlib loggers of pypsrp, dnspython, uvicorn ... are routed through the same processors).

Nothing is configured at import time; the CLI calls :func:`configure_logging` once.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from agent.config import SecretRef
from agent.terminal import visible

REDACTED = "***"

# Substrings of a key that mark its value as secret. "key" alone is not one of them: key paths
# (``network_mappings[0].source``) are logged all the time and are not secret.
SECRET_KEY_PARTS = ("password", "passwd", "secret", "token", "credential", "authorization", "api_key", "apikey")

LEVELS = ("debug", "info", "warning", "error")


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and any(part in key.lower() for part in SECRET_KEY_PARTS)


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, SecretRef):
        return REDACTED
    if depth > 8:  # a log event is not a place for deep structures; stop rather than recurse forever
        return value
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if _is_secret_key(k) and v is not None else _scrub(v, depth + 1)) for k, v in value.items()
        }
    if isinstance(value, tuple):
        return tuple(_scrub(v, depth + 1) for v in value)
    if isinstance(value, (list, set, frozenset)):
        return [_scrub(v, depth + 1) for v in value]
    return value


def redact_secrets(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: replace SecretRefs and values of secret-looking keys with ``***``."""

    scrubbed: dict[str, Any] = _scrub(event_dict)
    return scrubbed


def _visible_values(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """Text for a terminal shows control characters instead of obeying them (JSON lines escape
    them already)."""
    return {k: visible(v) if isinstance(v, str) else v for k, v in event.items()}


def configure_logging(level: str = "warning", *, json: bool | None = None, stream: TextIO | None = None,
                      handler: logging.Handler | None = None) -> None:
    """Set up structlog and the stdlib root logger. Idempotent; the last call wins.

    ``json=None`` chooses by the stream: JSON lines when it is not a terminal (a service, a pipe,
    CI), coloured key=value lines for a person at a terminal. ``handler`` replaces the stream
    (the Windows service's event log): it gets the same redacted JSON lines.
    """

    stream = stream if stream is not None else sys.stderr
    if json is None:
        json = handler is not None or not (hasattr(stream, "isatty") and stream.isatty())
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=hasattr(stream, "isatty") and stream.isatty())
    )

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = handler if handler is not None else logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        *([] if json else [_visible_values]), renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_failover_agent", False):
            root.removeHandler(old)
    handler._failover_agent = True  # type: ignore[attr-defined]  # lets a second call replace, not stack
    root.addHandler(handler)
    root.setLevel(numeric)


def get_logger(name: str | None = None, **initial: Any) -> Any:
    return structlog.stdlib.get_logger(name, **initial)
