"""Named errors for the refusals every driver reports the same way.

The ports (``agent.ports``) list, per method, the ``code`` an item error or a raised error
carries. These classes give each code one home, so the simulator, the PowerShell drivers and
the DNS drivers raise the *same* class for the same refusal and the engine can branch on the
class or on ``code`` alike. Structured fields name what the error is about (``vm``, ``nic``,
``pool``, ``address``, ``owner_id``, ``host``, ``router``, ``zone``, ``record`` ...).

Families follow :mod:`agent.errors`: a ``ConflictError`` means the object exists in a state
that forbids the call (re-read, then decide); a plain ``PermanentError`` means the request
itself can never succeed; a ``TransientError`` may succeed if asked again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.errors import (
    AgentError,
    Category,
    ConflictError,
    NotFoundError,
    PermanentError,
    RefusedError,
    TimeoutError_,
    TransientError,
    UnreachableError,
    make_error,
)

# ------------------------------------------------------------------------------ VMM IPAM


class AddressOutsidePool(PermanentError):
    """The address is not in the pool's allocatable range (or is of the other family)."""

    code = "address_outside_pool"


class AddressReserved(ConflictError):
    """The address is in the pool's reserved set (``-IPAddressReservedSet``): never handed out."""

    code = "address_reserved"


class AddressAlreadyGranted(ConflictError):
    """The address is granted to another owner. ``owner_id`` names the current holder."""

    code = "address_already_granted"


class PoolExhausted(ConflictError):
    """No free address is left in the pool (a grant without an address found nothing)."""

    code = "pool_exhausted"


class NetworkInUse(ConflictError):
    """A VM network still has NICs connected or grants held in its pools."""

    code = "network_in_use"


class NotATestNetwork(ConflictError):
    """The network was not created by the agent as a test network; the agent will not delete it."""

    code = "not_a_test_network"


# ------------------------------------------------------------------------------- Hyper-V


class ReplicationNotEnabled(PermanentError):
    """The VM has no Hyper-V Replica relationship (``ReplicationState`` is ``Disabled``)."""

    code = "replication_not_enabled"


class InvalidReplicationState(ConflictError):
    """The replication is not in a state the action starts from, or the action was sent to the
    wrong host of the pair (``expected_host`` then names the right one)."""

    code = "invalid_replication_state"


class TestFailoverRunning(ConflictError):
    """A test failover of the VM is already running (one at a time per VM)."""

    __test__ = False  # keep pytest from collecting a class whose name starts with "Test"
    code = "test_failover_running"


class VmRunning(ConflictError):
    """The action needs the VM shut down (e.g. prepare for planned failover on the primary)."""

    code = "vm_running"


class InvalidSetting(PermanentError):
    """A setting the host or server rejects as malformed (prefix length, family mismatch,
    more addresses of one family than the host supports)."""

    code = "invalid_setting"


# -------------------------------------------------------------------------------- routes


class RouteConflict(ConflictError):
    """The prefix is routed on that router to another next hop or interface."""

    code = "route_conflict"


# ----------------------------------------------------------------------------------- DNS
# Every DNS driver (RFC 2136, Windows DNS, simulator) raises these; how dnspython's and the socket
# layer's failures map onto them is agent.dns.errors. By what the caller does next:
#
#   timeout, unreachable, dns_servfail, dns_bad_response     transient: ask again (re-read first)
#   dns_prerequisite_failed                                  a pinned RRset changed: re-read
#   dns_refused, dns_not_authoritative, dns_not_zone,
#   dns_bad_key, dns_bad_time, dns_rejected,
#   dns_invalid_request                                      permanent
#   dns_batch_failed                                         some of a zone's update messages failed


class DnsPrerequisiteFailed(ConflictError):
    """A record set no longer holds what the change was pinned to; nothing of that update message
    was applied. ``record`` names it; ``conflicts`` gives what was expected and what was found,
    when the agent could read it back."""

    code = "dns_prerequisite_failed"


class DnsNotAuthoritative(PermanentError):
    """The server is not authoritative for the zone (NOTAUTH), or a read came back without the
    authoritative-answer flag."""

    code = "dns_not_authoritative"


class DnsNotZone(PermanentError):
    """A name of the update lies outside the zone (NOTZONE)."""

    code = "dns_not_zone"


class DnsRefused(PermanentError):
    """The server refused the update (REFUSED): its policy does not let this key or this client
    update the zone."""

    code = "dns_refused"


class DnsBadKey(PermanentError):
    """The TSIG key or signature was rejected (BADKEY, BADSIG), or the reply failed verification."""

    code = "dns_bad_key"


class DnsBadTime(PermanentError):
    """The TSIG time was rejected (BADTIME): the agent's and the server's clocks differ too much."""

    code = "dns_bad_time"


class DnsRejected(PermanentError):
    """Any other error rcode (FORMERR, NOTIMP, ...)."""

    code = "dns_rejected"


class DnsInvalidRequest(PermanentError):
    """A malformed call (a record outside the zone, a message too big), refused before sending."""

    code = "dns_invalid_request"


class DnsRecordNotPlanned(PermanentError):
    """VMM granted another address than planned and its PTR is not one the operation can write:
    in a zone no step of it updates (nothing would put it back on cancel or failback), or a
    record its step already changes."""

    code = "dns_record_not_planned"


class DnsServfail(TransientError):
    """The server failed to process the request (SERVFAIL); it may succeed later."""

    code = "dns_servfail"


class DnsBadResponse(TransientError):
    """A reply that does not parse or does not match the request."""

    code = "dns_bad_response"


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

    def __reduce__(self) -> tuple[Any, ...]:  # the failures are errors, not plain fields: rebuild them too
        fields = {k: v for k, v in self.fields.items() if k != "failures"}
        return (_rebuild_batch, (self.message, self.failures, fields))


def _rebuild_batch(message: str, failures: list[AgentError], fields: dict[str, Any]) -> DnsBatchError:
    return DnsBatchError(message, failures=failures, **fields)


# -------------------------------------------------------------------------------- calls


class InvalidRequest(PermanentError):
    """The call itself is malformed (e.g. routes for two routers in one call); a bug in the
    caller, not a refusal by the remote side."""

    code = "invalid_request"


_CLASSES: tuple[type[AgentError], ...] = (
    AgentError,
    RefusedError,
    TransientError,
    PermanentError,
    TimeoutError_,
    UnreachableError,
    NotFoundError,
    ConflictError,
    AddressOutsidePool,
    AddressReserved,
    AddressAlreadyGranted,
    PoolExhausted,
    NetworkInUse,
    NotATestNetwork,
    ReplicationNotEnabled,
    InvalidReplicationState,
    TestFailoverRunning,
    VmRunning,
    InvalidSetting,
    RouteConflict,
    DnsPrerequisiteFailed,
    DnsNotAuthoritative,
    DnsNotZone,
    DnsRefused,
    DnsBadKey,
    DnsBadTime,
    DnsRejected,
    DnsInvalidRequest,
    DnsServfail,
    DnsBadResponse,
    DnsBatchError,
    InvalidRequest,
)

ERROR_CLASSES: dict[str, type[AgentError]] = {cls.code: cls for cls in _CLASSES}
"""Every named error class by its ``code``."""


def error_from_code(code: str, message: str, *, category: Category = "permanent", **fields: Any) -> AgentError:
    """Rebuild an error from its recorded ``code`` (journal, call log, API): the named class when
    the code has one, else a generic error of ``category`` carrying that code."""

    cls = ERROR_CLASSES.get(code)
    if cls is not None:
        return cls(message, **fields)
    return make_error(code, category, message, **fields)


__all__ = [
    "ERROR_CLASSES",
    "AddressAlreadyGranted",
    "AddressOutsidePool",
    "AddressReserved",
    "DnsBadKey",
    "DnsBadResponse",
    "DnsBadTime",
    "DnsBatchError",
    "DnsInvalidRequest",
    "DnsNotAuthoritative",
    "DnsNotZone",
    "DnsPrerequisiteFailed",
    "DnsRefused",
    "DnsRejected",
    "DnsServfail",
    "InvalidReplicationState",
    "InvalidRequest",
    "InvalidSetting",
    "NetworkInUse",
    "NotATestNetwork",
    "PoolExhausted",
    "ReplicationNotEnabled",
    "RouteConflict",
    "TestFailoverRunning",
    "VmRunning",
    "error_from_code",
]
