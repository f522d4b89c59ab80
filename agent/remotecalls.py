"""One log event per remote call, and the hook metrics hang on.

The engine's ports are wrapped once (:func:`observed_ports`, in ``Engine``): every call of a port
method -- a VMM server, a Hyper-V host, a DNS server, a router, a script host -- logs one
``remote call`` event with ``endpoint``, ``kind``, ``call``, ``duration_ms`` and ``outcome``
(``ok``, or the error code the call raised), plus for a batch the number of items and of items
changed and refused. Calls that change something log at info, reads at debug (a plan reads every
site's whole inventory: at info a service log would be mostly reads); a call that raised logs at
warning. Inside a step the event carries the bound ``operation`` and ``step``
(:mod:`agent.logging`).

Metrics: append a callable to :data:`remote_call_observers`; it is called after every remote
call as ``observer(endpoint, kind, call, duration_s, ok)``, in the caller's thread. An observer
that raises is logged and otherwise ignored: counting a call must never fail it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import structlog

from agent.errors import AgentError
from agent.ports import PORT_CHANGES, PORT_READS, Dns, HyperV, ItemResult, Ports, Routes, Scripts, Vmm

log = structlog.get_logger("agent.remote")

RemoteCallObserver = Callable[[str, str, str, float, bool], None]
"""``(endpoint, kind, call, duration_s, ok)``: kind is vmm, hyperv, dns, routes or scripts; call is
``<kind>.<method>``; ok is False when the call itself raised (item refusals are still ok)."""

remote_call_observers: list[RemoteCallObserver] = []
"""Called after every remote call of the engine's ports (see the module)."""

P = TypeVar("P")


def _endpoint(kind: str, port: Any, method: str, args: tuple[Any, ...]) -> str:
    """Which endpoint a call goes to: a site's VMM server, a host, a DNS server, a router."""
    if kind == "vmm":
        return f"vmm@{port.site}"
    if kind == "dns":
        return str(port.name)
    if method in ("announce", "withdraw"):
        routes = args[0] if args else ()
        return str(routes[0].router) if routes else ""
    return str(args[0]) if args else ""


def _batch(value: Any) -> dict[str, int]:
    if isinstance(value, list) and value and all(isinstance(v, ItemResult) for v in value):
        return {"items": len(value), "changed": sum(1 for v in value if v.changed),
                "refused": sum(1 for v in value if v.error is not None)}
    return {}


def _notify(endpoint: str, kind: str, call: str, duration_s: float, ok: bool) -> None:
    for observer in list(remote_call_observers):
        try:
            observer(endpoint, kind, call, duration_s, ok)
        except Exception:
            log.exception("a remote-call observer failed", observer=repr(observer), call=call)


class ObservedPort:
    """A port with the same interface whose calls are logged and reported to the observers."""

    def __init__(self, port: Any, kind: str, protocol: type) -> None:
        self._port, self._kind = port, kind
        self._reads, self._changes = PORT_READS[protocol], PORT_CHANGES[protocol]

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._port, name)
        if not callable(attr) or (name not in self._reads and name not in self._changes):
            return attr
        changing = name in self._changes

        def call(*args: Any, **kwargs: Any) -> Any:
            endpoint = _endpoint(self._kind, self._port, name, args)
            what = f"{self._kind}.{name}"
            started = time.perf_counter()
            try:
                value = attr(*args, **kwargs)
            except BaseException as exc:
                took = time.perf_counter() - started
                code = exc.code if isinstance(exc, AgentError) else type(exc).__name__
                log.warning("remote call", endpoint=endpoint, kind=self._kind, call=what,
                            duration_ms=round(took * 1000, 1), outcome=code)
                _notify(endpoint, self._kind, what, took, False)
                raise
            took = time.perf_counter() - started
            (log.info if changing else log.debug)(
                "remote call", endpoint=endpoint, kind=self._kind, call=what, duration_ms=round(took * 1000, 1),
                outcome="ok", **_batch(value))
            _notify(endpoint, self._kind, what, took, True)
            return value

        return call


def observed_ports(ports: Ports) -> Ports:
    """``ports`` with every call logged and observed (see the module)."""

    def wrap(port: P, kind: str, protocol: type) -> P:
        if isinstance(port, ObservedPort):  # an engine built on another engine's ports
            return port
        # Same interface by construction: every attribute is the port's own.
        return cast(P, ObservedPort(port, kind, protocol))

    return Ports(
        vmm={k: wrap(v, "vmm", Vmm) for k, v in ports.vmm.items()},
        hyperv={k: wrap(v, "hyperv", HyperV) for k, v in ports.hyperv.items()},
        dns={k: wrap(v, "dns", Dns) for k, v in ports.dns.items()},
        routes=wrap(ports.routes, "routes", Routes),
        scripts=wrap(ports.scripts, "scripts", Scripts),
    )
