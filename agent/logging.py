"""Logging, configured in one place: structlog, JSON to stderr when stderr is not a terminal.

Everything the agent logs goes through :func:`redact_secrets`, so a secret reference or a value
under a key such as ``password`` or ``token`` never reaches a log line, whichever library logged
it (stdlib loggers of pypsrp, dnspython, uvicorn ... are routed through the same processors).

Nothing is configured at import time; the CLI calls :func:`configure_logging` once (``serve``
again, with the config's log file: :mod:`agent.configlog`). Structlog's context variables are
merged into every event: the runner binds ``operation`` around an operation and ``step`` around
each step (in the step's worker thread too), so every line logged meanwhile names them.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
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


class _ScrubArguments(logging.Filter):
    """A stdlib record's ``%`` arguments are merged into its message before any structlog
    processor sees it (``log.info("headers %s", {"Authorization": ...})``): scrub them first."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):
            record.args = _scrub(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(_scrub(a) for a in record.args)
        return True


def _visible_values(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """Text for a terminal shows control characters instead of obeying them (JSON lines escape
    them already)."""
    return {k: visible(v) if isinstance(v, str) else v for k, v in event.items()}


def configure_logging(level: str = "warning", *, json: bool | None = None, stream: TextIO | None = None,
                      console: bool = True, file: Path | None = None, file_level: str = "info",
                      max_bytes: int = 0, backups: int = 0,
                      extra_handlers: Sequence[logging.Handler] = ()) -> None:
    """Set up structlog and the stdlib root logger. Idempotent; the last call wins.

    The console (``stream``, default stderr) logs at ``level``; ``json=None`` chooses by the
    stream: JSON lines when it is not a terminal (a service, a pipe, CI), coloured key=value lines
    for a person at a terminal. ``file``: JSON lines at ``file_level`` too, rotated past
    ``max_bytes`` keeping ``backups`` old files (0: never rotated); its directory is created.
    ``extra_handlers`` (the Windows event log) get the same events, as JSON unless they bring a
    formatter of their own, at the level set on them (NOTSET: everything the root lets through).
    Raises ``OSError`` when the file cannot be opened, leaving the logging as it was.
    """

    stream = stream if stream is not None else sys.stderr
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())
    numeric, numeric_file = _level(level), _level(file_level)

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]

    def formatter(as_json: bool) -> logging.Formatter:
        renderer: Any = (
            structlog.processors.JSONRenderer()
            if as_json
            else structlog.dev.ConsoleRenderer(colors=hasattr(stream, "isatty") and stream.isatty())
        )
        return structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        *([] if as_json else [_visible_values]), renderer],
            foreign_pre_chain=shared,
        )

    handlers: list[logging.Handler] = []
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups,
                                                       encoding="utf-8")
        to_file.setLevel(numeric_file)
        to_file.setFormatter(formatter(True))
        handlers.append(to_file)
    if console:
        handler = logging.StreamHandler(stream)
        handler.setLevel(numeric)
        handler.setFormatter(formatter(json))
        handlers.append(handler)
    for extra in extra_handlers:
        if extra.formatter is None:
            extra.setFormatter(formatter(True))
        handlers.append(extra)

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_failover_agent", False):
            root.removeHandler(old)
            old.close()  # a file's handle (a StreamHandler leaves its stream open)
    for h in handlers:
        h.addFilter(_SCRUB_ARGUMENTS)
        h._failover_agent = True  # type: ignore[attr-defined]  # lets a second call replace, not stack
        root.addHandler(h)
    own = [numeric_file] * (file is not None) + [numeric] * console
    root.setLevel(min([*own, *(h.level for h in extra_handlers if h.level)] or [numeric]))


_SCRUB_ARGUMENTS = _ScrubArguments()


def _level(name: str) -> int:
    numeric = logging.getLevelName(name.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {name!r}; use one of {', '.join(LEVELS)}")
    return numeric


def get_logger(name: str | None = None, **initial: Any) -> Any:
    return structlog.stdlib.get_logger(name, **initial)
