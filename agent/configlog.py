"""The ``logging`` section of the config: where ``serve`` writes its log, and how much of it.

``serve`` always writes JSON lines to a file (default ``<data_dir>/agent.log``; a relative path is
relative to the config file, as ``agent.data_dir`` is), rotated by size. The console (stderr)
follows the command line's ``--log-level`` as every other command does, or is switched off with
``console: false`` (a service whose stderr nobody reads would only duplicate the file).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from agent.configrules import Model, SafePath
from agent.errors import RefusedError

if TYPE_CHECKING:
    from agent.configfile import LoadedConfig

LOG_FILE_NAME = "agent.log"


class Logging(Model):
    file: SafePath | None = None
    """JSON-lines log file; default ``<data_dir>/agent.log``; relative to the config file."""
    level: Literal["debug", "info", "warning", "error"] = "info"
    """What the file gets: info has one event per step and per changing remote call."""
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=0, le=1024**4)
    """Rotate the file when it would grow past this (0: never rotate)."""
    backups: int = Field(default=5, ge=0, le=1000)
    """Rotated files kept (``agent.log.1`` ...)."""
    console: bool = True
    """Also log on stderr, at the command line's ``--log-level``."""


def log_file(loaded: LoadedConfig) -> Path:
    """The log file ``loaded`` asks for, absolute."""
    configured = loaded.config.logging.file
    if configured is None:
        return loaded.data_dir / LOG_FILE_NAME
    configured = configured.expanduser()
    # The shipped demo's own directory may be read-only: its relative paths go to the data dir.
    base = loaded.data_dir if loaded.is_demo else loaded.path.parent
    return (configured if configured.is_absolute() else base / configured).resolve()


def configure_service_logging(loaded: LoadedConfig, *, console_level: str,
                              extra_handlers: Sequence[logging.Handler] = ()) -> Path:
    """Log as ``loaded``'s ``logging`` section says (the file always; the console at
    ``console_level`` unless switched off; ``extra_handlers`` too, e.g. the Windows event log).
    Returns the log file. Refused, naming ``logging.file``, when the file cannot be opened."""
    from agent.logging import configure_logging

    settings = loaded.config.logging
    path = log_file(loaded)
    try:
        configure_logging(console_level, console=settings.console, file=path, file_level=settings.level,
                          max_bytes=settings.max_bytes, backups=settings.backups, extra_handlers=extra_handlers)
    except OSError as exc:
        raise RefusedError(f"logging.file: cannot write the log file {path}: {exc.strerror or exc}",
                           key="logging.file", file=str(path)) from None
    return path
