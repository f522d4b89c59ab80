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


class DnsPrerequisiteFailed(ConflictError):
    """A record set no longer holds what the change expected; nothing in the batch was applied.
    ``record`` names it, ``found`` what the server holds."""

    code = "dns_prerequisite_failed"


class DnsNotAuthoritative(PermanentError):
    """The server is not authoritative for the zone (or a name lies outside it: NOTAUTH/NOTZONE)."""

    code = "dns_not_authoritative"


class DnsRefused(PermanentError):
    """The server refused the update (REFUSED, FORMERR, malformed record data)."""

    code = "dns_refused"


class DnsBadKey(PermanentError):
    """The TSIG key or signature was rejected (BADKEY, BADSIG, BADTIME)."""

    code = "dns_bad_key"


class DnsServfail(TransientError):
    """The server failed to process the request (SERVFAIL); it may succeed later."""

    code = "dns_servfail"


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
    DnsRefused,
    DnsBadKey,
    DnsServfail,
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
    "DnsNotAuthoritative",
    "DnsPrerequisiteFailed",
    "DnsRefused",
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
