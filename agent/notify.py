"""Notifications: each event (:mod:`agent.events`) to the webhooks and e-mail recipients of the
``notifications`` config section that want it.

:class:`Notifier` is an :class:`~agent.events.EventSink`: ``emit`` only queues, so the engine
never waits on a receiver. Each target has its own bounded queue and worker thread -- a receiver
that is down delays no other, and never an operation. A delivery that fails for a reason that may
pass (connection refused or timed out, HTTP 408/429/5xx, an SMTP 4xx reply) is tried again with
a doubling backoff (``notifications.delivery``); one refused for good (HTTP 4xx, a redirect,
an SMTP 5xx reply, a bad certificate, a secret that cannot be read) is not. Giving up is logged
with the target's name and the event, never with a secret, the URL's path or query (a webhook
URL often carries a token of its own) or a server's reply text.

The webhook request (README, "Notifications")::

    POST <url>
    Content-Type: application/json
    X-FailoverAgent-Event: <event id>
    X-FailoverAgent-Timestamp: <unix seconds, = the body's sent_at>
    X-FailoverAgent-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>

    {"id": ..., "kind": ..., "time": ..., "operation_id": ..., "plan": ..., "operation_kind": ...,
     "status": ..., "details": {...}, "agent": <owner id>, "attempt": 1, "sent_at": 1764790000}

A receiver verifies the signature over the bytes it received (before parsing them, in constant
time: ``hmac.compare_digest``), then refuses replays: ``sent_at`` is inside the signed body, so
it cannot be changed without the secret; refuse one more than five minutes from its own clock,
and drop an ``id`` it has already handled (a retry after a lost answer carries the same id, a
new ``attempt`` and ``sent_at``, and a new signature). :func:`verify_webhook` does exactly that.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import queue
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any
from urllib.parse import urlsplit

import structlog

from agent.confignotify import Delivery, Email, Notifications, Webhook
from agent.errors import AgentError
from agent.events import Event
from agent.terminal import visible

log = structlog.get_logger("agent.notify")

SIGNATURE_HEADER = "X-FailoverAgent-Signature"
TIMESTAMP_HEADER = "X-FailoverAgent-Timestamp"
EVENT_HEADER = "X-FailoverAgent-Event"
REPLAY_WINDOW_S = 300
RETRIED_HTTP = frozenset({408, 425, 429})


class Retry(Exception):
    """This attempt failed for a reason that may pass: try again later."""


class GiveUp(Exception):
    """This delivery cannot succeed by trying again."""


# ----------------------------------------------------------------------------- webhook


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def webhook_body(event: Event, *, agent: str, attempt: int, now: float) -> bytes:
    payload = {**event.to_json(), "agent": agent, "attempt": attempt, "sent_at": int(now)}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def verify_webhook(secret: bytes, body: bytes, headers: dict[str, str], *, now: float | None = None,
                   seen: set[str] | None = None) -> dict[str, Any]:
    """What a receiver does with a request: the event, or ``ValueError`` saying why it is refused.
    ``headers`` keyed case-insensitively as sent; ``seen``: the ids handled so far (updated)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if not hmac.compare_digest(lowered.get(SIGNATURE_HEADER.lower(), ""), sign(secret, body)):
        raise ValueError("bad signature")
    payload: dict[str, Any] = json.loads(body)
    now = time.time() if now is None else now
    if str(payload.get("sent_at")) != lowered.get(TIMESTAMP_HEADER.lower()):
        raise ValueError("timestamp header does not match the signed body")
    if abs(now - float(payload["sent_at"])) > REPLAY_WINDOW_S:
        raise ValueError("too old or from the future: a replay?")
    if seen is not None:
        if payload["id"] in seen:
            raise ValueError("already handled")
        seen.add(payload["id"])
    return payload


def _post(target: Webhook, body: bytes, headers: dict[str, str]) -> None:
    parts = urlsplit(target.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=str(target.ca_file) if target.ca_file else None)
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=target.timeout_s,
                                           context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=target.timeout_s)
    try:
        conn.request("POST", path, body=body, headers=headers)
        status = conn.getresponse().status
    except ssl.SSLCertVerificationError as exc:
        raise GiveUp(f"the receiver's certificate is not trusted ({exc.verify_message})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise Retry(_os_reason(exc)) from None
    finally:
        conn.close()
    if 200 <= status < 300:
        return
    if status >= 500 or status in RETRIED_HTTP:
        raise Retry(f"HTTP {status}")
    # A redirect is not followed: a signed POST goes to the URL configured, nowhere else.
    raise GiveUp(f"HTTP {status}")


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


# ------------------------------------------------------------------------------ e-mail


def email_message(event: Event, target: Email, *, agent: str) -> EmailMessage:
    msg = EmailMessage(policy=SMTP_POLICY)
    # A value of an event (a plan name, an instruction) cannot add a header: no line breaks here.
    msg["Subject"] = visible(f"[{agent}] {event.summary()}").replace("\n", " ")
    msg["From"] = target.sender
    msg["To"] = ", ".join(target.recipients)
    msg[EVENT_HEADER] = event.id
    lines = [event.summary(), ""]
    for label, value in (("Event", event.kind), ("Operation", event.operation_id), ("Kind", event.operation_kind),
                         ("Plan", event.plan), ("Status", event.status), ("Time", event.time.isoformat()),
                         ("Agent", agent), ("Event id", event.id)):
        if value:
            lines.append(f"{label}: {value}")
    instruction = event.details.get("instruction")
    if instruction:
        lines += ["", "Waiting for:", f"  {instruction}"]
    lines += ["", "Details:", json.dumps(dict(event.details), indent=2, sort_keys=True, default=str)]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def _send(target: Email, message: EmailMessage) -> None:
    context = ssl.create_default_context(cafile=str(target.ca_file) if target.ca_file else None)
    try:
        password = target.password.reveal() if target.password is not None else None
    except AgentError as exc:
        raise GiveUp(exc.message) from None  # names the reference, never a value
    try:
        smtp: smtplib.SMTP
        if target.security == "ssl":
            smtp = smtplib.SMTP_SSL(target.host, target.effective_port, timeout=target.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(target.host, target.effective_port, timeout=target.timeout_s)
        with smtp:
            if target.security == "starttls":
                smtp.starttls(context=context)
            if target.username is not None and password is not None:
                smtp.login(target.username, password)
            smtp.send_message(message)
    except smtplib.SMTPNotSupportedError:
        raise GiveUp("the SMTP server does not offer what the config asks (STARTTLS or AUTH)") from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({code for code, _ in exc.recipients.values()})
        if all(c >= 500 for c in codes):
            raise GiveUp(f"every recipient refused (SMTP {', '.join(map(str, codes))})") from None
        raise Retry(f"recipients refused for now (SMTP {', '.join(map(str, codes))})") from None
    except smtplib.SMTPResponseException as exc:
        # SMTP's 4xx is "try later" and 5xx "never": the other way round from HTTP. The reply's
        # text is not logged: it is the server's, and may echo what was sent.
        if 400 <= exc.smtp_code < 500:
            raise Retry(f"SMTP {exc.smtp_code}") from None
        raise GiveUp(f"SMTP {exc.smtp_code}") from None
    except ssl.SSLCertVerificationError as exc:
        raise GiveUp(f"the SMTP server's certificate is not trusted ({exc.verify_message})") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise Retry(_os_reason(exc)) from None


# ------------------------------------------------------------------------------ delivery


def backoff_s(policy: Delivery, failures: int) -> float:
    """Seconds to wait after the ``failures``-th failed attempt."""
    return min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** (failures - 1))


@dataclass
class _Channel:
    """One target: its queue, its worker, and how it delivers one attempt."""

    name: str
    channel: str
    wants: frozenset[str]
    deliver: Callable[[Event, int], None]
    queue: queue.Queue[Event]


class Notifier:
    """The :class:`~agent.events.EventSink` that delivers to the configured targets.

    ``close`` (at shutdown) waits up to its timeout for what is queued, then stops; a worker is
    a daemon thread, so a notifier never closed never keeps the process alive."""

    def __init__(self, config: Notifications, *, agent: str = "failover-agent",
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.agent = agent
        self._clock = clock
        self._stop = threading.Event()
        self._closed = False
        self._channels: list[_Channel] = []
        size = config.delivery.queue_size
        for hook in config.webhooks:
            self._channels.append(_Channel(hook.name, "webhook", frozenset(hook.events),
                                           self._webhook_attempt(hook), queue.Queue(size)))
        for mail in config.email:
            self._channels.append(_Channel(mail.name, "email", frozenset(mail.events),
                                           self._email_attempt(mail), queue.Queue(size)))
        self._threads = [threading.Thread(target=self._work, args=(c,), name=f"notify-{c.name}", daemon=True)
                         for c in self._channels]
        for t in self._threads:
            t.start()

    def emit(self, event: Event) -> None:
        if self._closed:
            log.warning("notification after shutdown dropped", kind=event.kind, event_id=event.id)
            return
        for c in self._channels:
            if event.kind not in c.wants:
                continue
            try:
                c.queue.put_nowait(event)
            except queue.Full:
                log.error("notification dropped: too many waiting for this target", target=c.name,
                          channel=c.channel, kind=event.kind, event_id=event.id, operation=event.operation_id,
                          queue_size=self.config.delivery.queue_size)

    def drain(self, timeout_s: float) -> bool:
        """Wait until every queued notification is delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout_s
        for c in self._channels:
            with c.queue.all_tasks_done:
                while c.queue.unfinished_tasks:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    c.queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop taking events, deliver what is queued for up to ``timeout_s``, stop the workers.
        What is still undelivered then is logged (a backoff in progress is cut short)."""
        self._closed = True
        deadline = time.monotonic() + timeout_s
        drained = self.drain(timeout_s)
        self._stop.set()
        for t in self._threads:
            # A worker stuck in a request to a hung receiver is left to its timeout: it is a daemon.
            t.join(timeout=max(0.2, deadline - time.monotonic()))
        if not drained:
            left = {c.name: c.queue.unfinished_tasks for c in self._channels if c.queue.unfinished_tasks}
            log.error("notifications not delivered before shutdown", waiting=left)

    # ---------------------------------------------------------------------- internals

    def _webhook_attempt(self, hook: Webhook) -> Callable[[Event, int], None]:
        def attempt(event: Event, number: int) -> None:
            try:
                secret = hook.secret.reveal().encode()
            except AgentError as exc:
                raise GiveUp(exc.message) from None
            body = webhook_body(event, agent=self.agent, attempt=number, now=self._clock())
            headers = {"Content-Type": "application/json", "User-Agent": self.agent, EVENT_HEADER: event.id,
                       TIMESTAMP_HEADER: str(json.loads(body)["sent_at"]), SIGNATURE_HEADER: sign(secret, body)}
            _post(hook, body, headers)
        return attempt

    def _email_attempt(self, mail: Email) -> Callable[[Event, int], None]:
        def attempt(event: Event, number: int) -> None:
            _send(mail, email_message(event, mail, agent=self.agent))
        return attempt

    def _work(self, c: _Channel) -> None:
        while not self._stop.is_set():
            try:
                event = c.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._deliver(c, event)
            except Exception as exc:  # a bug here must not end the worker: later events still go out
                log.error("notification worker error", target=c.name, event_id=event.id, error=type(exc).__name__)
            finally:
                c.queue.task_done()

    def _deliver(self, c: _Channel, event: Event) -> None:
        policy = self.config.delivery
        where = {"target": c.name, "channel": c.channel, "kind": event.kind, "event_id": event.id,
                 "operation": event.operation_id}
        for number in range(1, policy.attempts + 1):
            try:
                c.deliver(event, number)
            except GiveUp as exc:
                log.error("notification refused: not tried again", attempts=number, reason=str(exc), **where)
                return
            except Retry as exc:
                if self._stop.is_set():
                    log.error("notification not delivered: shutting down", attempts=number, reason=str(exc), **where)
                    return
                if number == policy.attempts:
                    log.error("notification not delivered: giving up", attempts=number, reason=str(exc), **where)
                    return
                delay = backoff_s(policy, number)
                log.warning("notification not delivered: trying again", attempt=number, reason=str(exc),
                            retry_in_s=delay, **where)
                if self._stop.wait(delay):
                    log.error("notification not delivered: shutting down", attempts=number, **where)
                    return
            else:
                log.info("notification delivered", attempts=number, **where)
                return
