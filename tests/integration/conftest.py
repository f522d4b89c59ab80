"""Fixtures for tests against a real BIND 9 (``tests/bind.py``).

Without ``named`` the tests that use these fixtures skip, with the reason -- unless ``CI=true``,
where they fail: the CI image is supposed to have BIND, and a green run that skipped every DNS
test would prove nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import DnsServer
from agent.dns.transport import DnsSession
from agent.drivers.rfc2136 import Rfc2136Dns
from tests.bind import FORWARD_ZONE, REVERSE4_ZONE, REVERSE6_ZONE, BindServer, require_named


@pytest.fixture(scope="session")
def named() -> str:
    """The path of ``named``; skips (or, under CI=true, fails) when it is missing."""
    return require_named()


def _running(server: BindServer) -> Iterator[BindServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bind(named: str, tmp_path: Path) -> Iterator[BindServer]:
    """A fresh primary with the forward, IPv4-reverse and IPv6-reverse zones, started."""
    yield from _running(BindServer(tmp_path / "primary", named=named))


@pytest.fixture
def bind_secondary(bind: BindServer, tmp_path: Path) -> Iterator[BindServer]:
    """A second named serving the same zones from its own copy of the original files: it never
    sees the primary's updates (a lagging secondary)."""
    yield from _running(bind.secondary(tmp_path / "secondary"))


@pytest.fixture
def bind_resolver(bind: BindServer, tmp_path: Path) -> Iterator[BindServer]:
    """A caching resolver that forwards every query to the primary."""
    yield from _running(bind.caching_resolver(tmp_path / "resolver"))


DriverFactory = Callable[..., Rfc2136Dns]


@pytest.fixture
def make_driver(bind: BindServer, tmp_path: Path) -> DriverFactory:
    """Build an :class:`Rfc2136Dns` for ``bind``. The secret goes through a ``file:`` reference,
    as in a real config; ``secret=`` overrides the key's real secret (a wrong one)."""

    def factory(
        *,
        key: str = "agent-key",
        secret: str | None = None,
        algorithm: str | None = None,
        batch_size: int = 100,
        timeout_s: float = 3.0,
        session_factory: Callable[[], DnsSession] | None = None,
        server: BindServer | None = None,
    ) -> Rfc2136Dns:
        target = server or bind
        known = target.keys.get(key)
        value = (
            secret if secret is not None else (known.secret if known else "c2VjcmV0LW9mLWEta2V5LW5vYm9keS1rbm93cw==")
        )
        secret_file = tmp_path / f"secret-{key}-{abs(hash(value))}"
        secret_file.write_text(value + "\n")
        os.chmod(secret_file, 0o600)
        config = DnsServer(
            name="dns-test",
            kind="rfc2136",
            address=target.host,
            port=target.port,
            timeout_s=timeout_s,
            tsig={
                "name": key,
                "algorithm": algorithm or (known.algorithm if known else "hmac-sha256"),
                "secret": f"file:{secret_file}",
            },
        )
        return Rfc2136Dns(
            config, [FORWARD_ZONE, REVERSE4_ZONE, REVERSE6_ZONE], batch_size=batch_size, session_factory=session_factory
        )

    return factory
