"""How dnspython's and the socket layer's failures become the ``Dns`` port's errors.

The error classes themselves live with every other code in :mod:`agent.domain.errors`; this
module only maps a reply's rcode or a raised exception onto them, for every driver that speaks
DNS on the wire (the RFC 2136 driver, verification). By what the caller does next:

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
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.tsig

from agent.domain.errors import (
    DnsBadKey,
    DnsBadResponse,
    DnsBadTime,
    DnsInvalidRequest,
    DnsNotAuthoritative,
    DnsNotZone,
    DnsPrerequisiteFailed,
    DnsRefused,
    DnsRejected,
    DnsServfail,
)
from agent.errors import AgentError, TimeoutError_, UnreachableError


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
