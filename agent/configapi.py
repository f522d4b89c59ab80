"""The ``api:`` section: where the served agent listens, its TLS, and who may call it.

Tokens are kept as SHA-256 hashes only (``failover-agent token create`` prints a new token once,
with the hash to put here): the config file, its backups and ``config show`` never hold a
credential. A plain hash, not a slow one, is right here: the tokens are 256 random bits, so no
dictionary attack applies, and every request checks one.

A bind address other than loopback needs TLS: a bearer token sent in clear over a network is a
credential given away.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, model_validator

from agent.configrules import Model, SafePath

Scope = Literal["read", "operate", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "operate", "admin")
"""Each scope includes the ones before it: an ``operate`` token may also read."""


class ApiToken(Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@\-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Hex SHA-256 of the token, as ``failover-agent token create`` prints it."""
    scopes: list[Scope] = Field(min_length=1)


class Tls(Model):
    cert: SafePath
    """PEM certificate chain (relative paths are relative to the config file)."""
    key: SafePath
    client_ca: SafePath | None = None
    """When set, callers must present a client certificate issued by this CA (mutual TLS)."""


class Api(Model):
    enabled: bool = True
    """``serve`` runs the HTTP API beside the leader loop; false runs the loop alone."""
    host: str = "127.0.0.1"
    port: int = Field(default=8740, ge=0, le=65535)
    """0: a free port, said at start (several agents on one machine, tests)."""
    tls: Tls | None = None
    tokens: list[ApiToken] = Field(default_factory=list)
    failed_auth_delay_s: float = Field(default=0.25, ge=0, le=10, allow_inf_nan=False)
    """The delay added to each further failed authentication from one client (doubling, up to
    5 s): guessing tokens costs time, a caller with a good token is never slowed."""

    @model_validator(mode="after")
    def _tls_off_loopback(self) -> Api:
        if self.enabled and self.tls is None and not is_loopback(self.host):
            raise ValueError(f"host {self.host!r} is not a loopback address: serving the API beyond this "
                             "machine needs api.tls (cert and key); bearer tokens must not cross a network in clear")
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
