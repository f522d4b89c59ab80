"""The errors of the ``Dns`` port, shared by every DNS driver (RFC 2136, Windows, simulator).

Codes are what the port's docstring lists, so the engine and the API see the same code whatever
the driver. By what the caller does next:

=========================== ============ =========================================================
code                        category     meaning
=========================== ============ =========================================================
``timeout``                 transient    no answer in time; the update may or may not have applied
``unreachable``             transient    connection refused / lost / no route
``dns_servfail``            transient    SERVFAIL: the server could not process it now
``dns_bad_response``        transient    a reply that does not parse or does not match the request
``dns_prerequisite_failed`` permanent    a pinned RRset is not what the caller expected: re-read
``dns_refused``             permanent    REFUSED: policy (the key may not update this zone, ...)
``dns_not_authoritative``   permanent    NOTAUTH, or a read answered without authority
``dns_not_zone``            permanent    NOTZONE: a name of the update is outside the zone
``dns_bad_key``             permanent    TSIG: unknown key, wrong secret or algorithm
``dns_bad_time``            permanent    TSIG: clocks of agent and server too far apart
``dns_rejected``            permanent    any other error rcode (FORMERR, NOTIMP, ...)
``dns_invalid_request``     permanent    a malformed call, refused before anything was sent
``dns_batch_failed``        see below    several update messages for one zone, some failed
=========================== ============ =========================================================

Structured fields: ``zone``, ``server`` (config name), ``address`` (host:port), ``key`` (TSIG key
*name*), ``record``/``records`` (``"name TYPE"``), ``rcode``. Never a secret: no function here is
given one, and the foreign exceptions wrapped (``raise ... from``) are dnspython's and the
socket module's, whose messages hold no key material.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.tsig

from agent.errors import (
    AgentError,
    Category,
    ConflictError,
    PermanentError,
    TimeoutError_,
    TransientError,
    UnreachableError,
)


class DnsServfail(TransientError):
    code = "dns_servfail"


class DnsBadResponse(TransientError):
    code = "dns_bad_response"


class DnsPrerequisiteFailed(ConflictError):
    """The server (or the agent's own read) found an RRset other than the one the change was
    pinned to. Nothing of that update message applied. ``conflicts`` names each RRset with what
    was expected and what was found, when the agent could read it back."""

    code = "dns_prerequisite_failed"


class DnsRefused(PermanentError):
    code = "dns_refused"


class DnsNotAuthoritative(PermanentError):
    code = "dns_not_authoritative"


class DnsNotZone(PermanentError):
    code = "dns_not_zone"


class DnsBadKey(PermanentError):
    code = "dns_bad_key"


class DnsBadTime(PermanentError):
    code = "dns_bad_time"


class DnsRejected(PermanentError):
    code = "dns_rejected"


class DnsInvalidRequest(PermanentError):
    code = "dns_invalid_request"


class DnsBatchError(AgentError):
    """Some of the update messages that carried one zone's changes failed.

    ``failures`` holds one error per failed message, each naming its records (``records``) and
    its position (``batch`` of ``batches``). **Messages that succeeded stay applied**: the caller
    re-reads before deciding anything. The category is ``transient`` only when every failure is
    transient (retrying the whole call is then safe and useful: what applied already holds and
    is left out), else ``permanent``.
    """

    code = "dns_batch_failed"

    def __init__(self, message: str, *, failures: Sequence[AgentError], **fields: Any) -> None:
        fields.pop("failures", None)
        super().__init__(message, failures=[f.to_dict() for f in failures], **fields)
        self.failures: list[AgentError] = list(failures)
        category: Category = "transient" if failures and all(f.transient for f in failures) else "permanent"
        self.category = category  # type: ignore[misc]  # per instance: follows the failures

    def __reduce__(self):  # the failures are errors, not plain fields: rebuild them too
        fields = {k: v for k, v in self.fields.items() if k != "failures"}
        return (_rebuild_batch, (self.message, self.failures, fields))


def _rebuild_batch(message: str, failures: list[AgentError], fields: dict[str, Any]) -> DnsBatchError:
    return DnsBatchError(message, failures=failures, **fields)


def error_for_rcode(rcode: int, *, what: str, **fields: Any) -> AgentError | None:
    """The error for a reply's rcode, or ``None`` for NOERROR (and NXDOMAIN to a query, which
    the caller handles). ``what`` says what was sent, e.g. ``"the update of zone example.test."``."""
    text = dns.rcode.to_text(dns.rcode.Rcode(rcode))
    where = _where(fields)
    if rcode == dns.rcode.NOERROR:
        return None
    if rcode == dns.rcode.SERVFAIL:
        return DnsServfail(f"{where} answered SERVFAIL to {what}; try again later", rcode=text, **fields)
    if rcode == dns.rcode.REFUSED:
        return DnsRefused(
            f"{where} refused {what} (REFUSED): the key may not update it, or the server does not "
            "accept this request from the agent",
            rcode=text,
            **fields,
        )
    if rcode == dns.rcode.NOTAUTH:
        return DnsNotAuthoritative(f"{where} is not authoritative for {what} (NOTAUTH)", rcode=text, **fields)
    if rcode == dns.rcode.NOTZONE:
        return DnsNotZone(f"{where} refused {what}: a name is outside the zone (NOTZONE)", rcode=text, **fields)
    if rcode in (dns.rcode.YXDOMAIN, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.NXRRSET):
        return DnsPrerequisiteFailed(
            f"{where} refused {what} ({text}): a record set is no longer what the agent expected; "
            "nothing in this update was applied",
            rcode=text,
            **fields,
        )
    return DnsRejected(f"{where} rejected {what} ({text})", rcode=text, **fields)


def error_for_exception(exc: BaseException, *, what: str, **fields: Any) -> AgentError | None:
    """The agent error for a failure raised by dnspython or the socket layer while exchanging
    messages, or ``None`` if ``exc`` is not one (a bug: let it propagate)."""
    where = _where(fields)
    key = fields.get("key")
    # Tested against BIND 9.18 (reference/recipes-tested-here.md section 1): an unknown key name
    # and a wrong secret come back as an *unsigned* NOTAUTH reply carrying the TSIG error, which
    # dnspython turns into these exceptions instead of an rcode.
    if isinstance(exc, dns.tsig.PeerBadKey):
        return DnsBadKey(f"{where} does not know the TSIG key {key!r} (BADKEY) for {what}", **fields)
    if isinstance(exc, (dns.tsig.PeerBadSignature, dns.tsig.PeerBadTruncation)):
        return DnsBadKey(
            f"{where} rejected the signature made with TSIG key {key!r} (BADSIG) for {what}: wrong secret or algorithm",
            **fields,
        )
    if isinstance(exc, dns.tsig.PeerBadTime):
        return DnsBadTime(
            f"{where} rejected the TSIG time of {what} (BADTIME): the clocks of agent and server differ "
            "by more than the allowed fudge",
            **fields,
        )
    if isinstance(exc, (dns.tsig.BadSignature, dns.tsig.BadTime, dns.message.UnknownTSIGKey, dns.tsig.BadAlgorithm)):
        return DnsBadKey(f"the reply of {where} to {what} failed TSIG verification with key {key!r}", **fields)
    if isinstance(exc, (dns.exception.Timeout, TimeoutError, socket.timeout)):
        return TimeoutError_(
            f"{where} did not answer {what} in time; it may or may not have applied: re-read", **fields
        )
    if isinstance(exc, ConnectionRefusedError):
        return UnreachableError(f"{where} refused the connection for {what} (is the server running?)", **fields)
    if isinstance(exc, (EOFError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return UnreachableError(
            f"{where} closed the connection during {what}; it may or may not have applied: re-read",
            **fields,
        )
    if isinstance(exc, OSError):  # no route, unknown host, network down
        return UnreachableError(f"cannot reach {where} for {what}: {exc.strerror or exc}", **fields)
    if isinstance(exc, dns.exception.TooBig):
        return DnsInvalidRequest(
            f"{what} does not fit in one DNS message (65,535 bytes); use a smaller batch size", **fields
        )
    if isinstance(exc, dns.exception.DNSException):  # malformed or mismatched reply
        return DnsBadResponse(f"{where} sent an unusable reply to {what}: {exc}", **fields)
    return None


def _where(fields: dict[str, Any]) -> str:
    server, address = fields.get("server"), fields.get("address")
    if server and address:
        return f"DNS server {server} ({address})"
    return f"DNS server {server or address or '?'}"
