"""The ``notifications`` section of the config: webhooks and e-mail, which events each gets, and
how hard delivery tries (:mod:`agent.notify` delivers, :mod:`agent.events` says what an event is).

Secrets are references only (the webhook's signing secret, the SMTP password). Addresses are
checked simply -- ``name@domain``, no spaces or line breaks (a line break in a header would let
a value add headers of its own) -- and URLs are ``http`` or ``https`` with a host and no user
name or password in them (a password in a URL is a plain-text secret in the file).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from agent.configrules import Model, SafePath, seconds
from agent.configsecrets import SecretRef
from agent.domain.model import Name
from agent.events import EVENT_KINDS, EventKind

_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_EXPIRY_WARNING = timedelta(days=365)


def _email_address(value: str) -> str:
    if not _ADDRESS.match(value):
        raise ValueError(f"{value!r} is not an e-mail address (name@domain)")
    return value


def _web_url(value: str) -> str:
    if _CONTROL.search(value) or " " in value:
        raise ValueError("a URL cannot contain spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"a webhook URL is http:// or https://, not {parts.scheme or 'without a scheme'}")
    if not parts.hostname:
        raise ValueError("a webhook URL needs a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a webhook URL cannot carry a user name or password (a plain-text secret); "
                         "the body is signed with 'secret' instead")
    try:
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError as exc:
        raise ValueError(f"a webhook URL with a bad port: {exc}") from None
    return value


def _host(value: str) -> str:
    if not value or _CONTROL.search(value) or " " in value:
        raise ValueError("a host name without spaces or control characters")
    return value


def _warning_lead(value: timedelta) -> timedelta:
    if not timedelta(0) < value <= MAX_EXPIRY_WARNING:
        raise ValueError("the expiry warning comes more than 0 and at most 365 days before the maximum age (e.g. P1D)")
    return value


EmailAddress = Annotated[str, AfterValidator(_email_address)]
WebUrl = Annotated[str, AfterValidator(_web_url)]
Host = Annotated[str, AfterValidator(_host)]
EventFilter = list[EventKind]


def _all_kinds() -> list[EventKind]:
    return list(EVENT_KINDS)


class Webhook(Model):
    """POST of each event as JSON, signed with HMAC-SHA256 (README, "Notifications": how a
    receiver verifies the signature and refuses replays)."""

    name: Name
    url: WebUrl
    secret: SecretRef
    """The HMAC key the receiver shares: ``env:NAME`` or ``file:PATH``."""
    events: EventFilter = Field(default_factory=_all_kinds, min_length=1)
    """Which events this receiver gets; default all of them."""
    timeout_s: float = seconds(10.0, high=300)
    ca_file: SafePath | None = None
    """A PEM bundle of the CAs that sign the receiver's HTTPS certificate (default: the system's)."""


class Email(Model):
    """An e-mail per event, over SMTP."""

    name: Name
    host: Host
    port: int | None = Field(default=None, ge=1, le=65535)
    """Default: 465 with ``security: ssl``, 587 with ``starttls``, 25 with ``none``."""
    security: Literal["starttls", "ssl", "none"] = "starttls"
    """``starttls``: plain connection upgraded to TLS before anything is sent (refused if the
    server does not offer it); ``ssl``: TLS from the start; ``none``: no TLS (no password then)."""
    username: str | None = Field(default=None, min_length=1)
    password: SecretRef | None = None
    sender: EmailAddress
    recipients: list[EmailAddress] = Field(min_length=1)
    events: EventFilter = Field(default_factory=_all_kinds, min_length=1)
    timeout_s: float = seconds(30.0, high=300)
    ca_file: SafePath | None = None
    """A PEM bundle of the CAs that sign the SMTP server's certificate (default: the system's)."""

    @model_validator(mode="after")
    def _credentials(self) -> Email:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.password is not None and self.security == "none":
            raise ValueError("a password is sent only over TLS: security starttls or ssl")
        if self.ca_file is not None and self.security == "none":
            raise ValueError("ca_file is used only with security starttls or ssl")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or {"ssl": 465, "starttls": 587, "none": 25}[self.security]


class Delivery(Model):
    """How hard each notification is tried: ``attempts`` in all, waiting ``initial_backoff_s``
    after the first failure, doubling up to ``max_backoff_s``. Only what may pass by itself is
    tried again (a connection refused or timed out, HTTP 408/429/5xx, an SMTP 4xx reply)."""

    attempts: int = Field(default=5, ge=1, le=100)
    initial_backoff_s: float = seconds(2.0, high=3600)
    max_backoff_s: float = seconds(300.0, high=86400)
    queue_size: int = Field(default=1000, ge=1, le=100000)
    """Events waiting per receiver; beyond that new ones are dropped (and logged), so a receiver
    down for days does not grow the agent's memory without end."""


class Notifications(Model):
    """Target names are unique across webhooks and e-mail (checked with the config's other
    names, :func:`agent.configrules.duplicate_names`): the logs name a target by it."""

    webhooks: list[Webhook] = Field(default_factory=list)
    email: list[Email] = Field(default_factory=list)
    delivery: Delivery = Delivery()
    expiry_warning: Annotated[timedelta, AfterValidator(_warning_lead)] = timedelta(days=1)
    """How long before a test failover's forced cleanup ``test_failover.expiring`` is sent (at
    most half the maximum age, so a short maximum age still gets its warning)."""

    def wants(self, kind: EventKind) -> bool:
        """Whether any target gets events of ``kind``."""
        return any(kind in w.events for w in self.webhooks) or any(kind in e.events for e in self.email)

    def expiry_warning_at(self, created: datetime, expires: datetime) -> datetime:
        """When ``test_failover.expiring`` falls due for a test failover created at ``created``."""
        return expires - min(self.expiry_warning, (expires - created) / 2)
