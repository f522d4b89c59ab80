"""The transports behind :class:`agent.drivers.remoting.Remote`, by the name an endpoint's
``transport`` gives."""

from __future__ import annotations

from agent.configfile import LoadedConfig
from agent.drivers.remoting import Remote
from agent.errors import PermanentError


def open_remote(transport: str, loaded: LoadedConfig) -> Remote:
    """The transport object for ``transport`` (shared by every driver of ``loaded``)."""
    raise PermanentError(f"transport {transport!r} has no implementation in this version", transport=transport)
