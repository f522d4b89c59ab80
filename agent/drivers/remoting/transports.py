"""The transports behind :class:`agent.drivers.remoting.Remote`, by the name an endpoint's
``transport`` gives."""

from __future__ import annotations

from agent.configfile import LoadedConfig
from agent.drivers.remoting import Remote
from agent.errors import PermanentError


def open_remote(transport: str, loaded: LoadedConfig) -> Remote:
    """The transport object for ``transport`` (shared by every driver of ``loaded``); its
    ``close()`` closes every connection it opened."""
    if transport == "psrp":
        from agent.drivers.remoting.psrp import PsrpRemote

        return PsrpRemote()
    if transport == "winrm":
        from agent.drivers.remoting.winrm import WinrmRemote

        return WinrmRemote()
    if transport == "local":
        from agent.drivers.remoting.local import LocalRemote

        return LocalRemote()
    raise PermanentError(f"transport {transport!r} has no implementation in this version", transport=transport)
