"""The agent's view of each outside system: one ``typing.Protocol`` per system.

Every driver -- the simulator (``agent.drivers.sim``), the PowerShell-remoting drivers, the
RFC 2136 driver -- implements these protocols and nothing more, so the engine cannot tell them
apart. :class:`Ports` bundles one config's ports; :mod:`agent.wiring` builds it.

Shared contract, for every port:

* **Batch-shaped.** A mutating method takes a sequence of items and makes *one* round trip to
  one remote endpoint (one VMM server, one Hyper-V host, one DNS server, one router). The engine
  groups work so a whole recovery-plan group costs one call per host per action.
* **Idempotent.** A mutating method reads current state first and acts only on drift: asking for
  what already holds succeeds with ``changed=False``. Calling it twice is always safe.
* **Per-item outcome.** A mutating method returns one :class:`ItemResult` per item, in input
  order. An item the remote side refuses carries its :class:`~agent.errors.AgentError`; the other
  items still take effect. Only a failure of the *call itself* raises: a
  :class:`~agent.errors.TransientError` (timeout, unreachable) -- after which the caller must
  re-read state, since some items may have taken effect -- or a
  :class:`~agent.errors.PermanentError` for a malformed call.
* **Named errors.** Item errors use the ``code`` values listed on each method, identical across
  drivers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict

from agent.domain.model import (
    FailoverIpSetting,
    IpGrant,
    Nic,
    NicFailoverConfig,
    RecordChange,
    RecordSet,
    RecordType,
    Replication,
    Route,
    StaticIpPool,
    VirtualMachine,
    VmNetwork,
)
from agent.errors import AgentError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ItemResult(Generic[T]):
    """What happened to one item of a batch call."""

    key: str
    """Names the item, e.g. ``"web01/nic0"`` or ``"pool-b:172.16.1.10"``."""
    value: T | None = None
    changed: bool = False
    error: AgentError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# ----------------------------------------------------------------------------------- VMM


@dataclass(frozen=True, slots=True)
class VmmInventory:
    """One VMM server's view of its site."""

    site: str
    vm_networks: tuple[VmNetwork, ...]
    pools: tuple[StaticIpPool, ...]
    grants: tuple[IpGrant, ...]
    vms: tuple[VirtualMachine, ...]


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """Reserve ``address`` in ``pool`` for the NIC ``owner_id`` (``Grant-SCIPAddress``)."""

    pool: str
    address: str
    owner_id: str
    description: str = ""

    @property
    def key(self) -> str:
        return f"{self.pool}:{self.address}"


@dataclass(frozen=True, slots=True)
class TestNetworkSpec:
    """An isolated VM network for a test failover that copies ``copy_of``'s subnets and pools.

    The copy is a Windows Network Virtualization network (isolated by construction); each pool
    of the original is copied with the same range, reserved set, gateway and DNS settings, named
    ``<name>/<original pool name>``.
    """

    name: str
    copy_of: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class NicConnection:
    """Connect a NIC to a VM network (``Set-SCVirtualNetworkAdapter -VMNetwork -VMSubnet``).

    ``vm_network=None`` disconnects it. ``addresses`` (address, prefix length) makes the NIC
    static with those addresses, which must be granted to the NIC in a pool of that network;
    empty means DHCP.
    """

    vm: str
    nic: str
    vm_network: str | None
    vm_subnet: str | None = None
    addresses: tuple[tuple[str, int], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.vm}/{self.nic}"


@runtime_checkable
class Vmm(Protocol):
    """One site's System Center VMM server.

    Error codes on items: ``not_found`` (VM, NIC, network, pool), ``address_outside_pool``,
    ``address_reserved``, ``address_already_granted`` (to another owner), ``pool_exhausted``,
    ``network_in_use``, ``not_a_test_network``, ``invalid_setting`` (a NIC connection whose
    addresses do not fit the network's pool, or a disconnection that names addresses).
    """

    site: str

    def read_inventory(self) -> VmmInventory:
        """VM networks, static pools, grants and VMs (with NICs) of this site, in one call."""
        ...

    def grant_ips(self, requests: Sequence[GrantRequest]) -> list[ItemResult[IpGrant]]:
        """Reserve each address for its owner NIC. Idempotent: a grant of the same address to
        the same owner is returned unchanged. An address granted to *another* owner, outside the
        pool's range, or in its reserved set is refused for that item.

        ``address=""`` asks for any free address (``Grant-SCIPAddress`` without ``-IPAddress``):
        that is *not* idempotent, every call grants another one. Each grant keeps the request's
        ``description`` (``-Description``; ``read_inventory`` returns it, as ``Get-SCIPAddress``
        does), so a caller that may have been granted already -- a retry after a timeout, a
        resumed step -- finds the grant by it before asking again."""
        ...

    def revoke_ips(self, grants: Sequence[IpGrant]) -> list[ItemResult[None]]:
        """Return each address to its pool (``Revoke-SCIPAddress``). Idempotent: a grant that is
        already gone is ``changed=False``. Refuses (``conflict``) a grant now owned by another NIC."""
        ...

    def create_test_networks(self, specs: Sequence[TestNetworkSpec]) -> list[ItemResult[VmNetwork]]:
        """Create isolated copies of VM networks with their subnets and pools. Idempotent: an
        existing test network of that name copied from the same network is returned unchanged;
        a non-test network of that name is refused (``conflict``)."""
        ...

    def delete_test_networks(self, names: Sequence[str]) -> list[ItemResult[None]]:
        """Delete test networks and their pools. Idempotent (missing: ``changed=False``). Refuses
        a network the agent did not create as a test network (``not_a_test_network``) and one
        with NICs still connected or grants still held (``network_in_use``)."""
        ...

    def connect_nics(self, connections: Sequence[NicConnection]) -> list[ItemResult[Nic]]:
        """Connect (or disconnect) NICs, optionally with static addresses. Idempotent."""
        ...

    def probe(self) -> str:
        """A read-only call that proves this VMM server answers the agent (preflight, before an
        operation changes anything); returns what it answered, for the operator. Raises like a
        read: ``timeout``, ``unreachable``."""
        ...


# ------------------------------------------------------------------------------- Hyper-V

ReplicaAction = Literal[
    "prepare",  # Start-VMFailover -Prepare, on the primary host; the primary VM must be Off
    "failover",  # Start-VMFailover, on the replica host
    "start_test",  # Start-VMFailover -AsTest, on the replica host: creates "<vm> - Test"
    "stop_test",  # Stop-VMFailover on the test VM: deletes the test VM
    "cancel",  # Stop-VMFailover: undo prepare/failover before completion
    "complete",  # Complete-VMFailover: commit; the failover can no longer be cancelled
    "reverse",  # Set-VMReplication -Reverse: the replica becomes the primary
]
PowerAction = Literal["start", "stop"]


@runtime_checkable
class HyperV(Protocol):
    """The Hyper-V hosts of one site. Every call targets one ``host``.

    Error codes on items: ``not_found`` (VM, NIC), ``replication_not_enabled``,
    ``invalid_replication_state`` (e.g. failover before prepare on a running primary),
    ``test_failover_running`` (only one test failover per VM), ``vm_running`` (prepare needs the
    primary off), ``invalid_setting`` (mask without address, two settings of one family where the
    host supports one).
    """

    site: str

    def get_failover_configs(self, host: str, nics: Sequence[tuple[str, str]]) -> list[NicFailoverConfig]:
        """The failover TCP/IP configuration of each (vm, nic); empty ``settings`` when unset."""
        ...

    def set_failover_configs(
        self, host: str, configs: Sequence[NicFailoverConfig]
    ) -> list[ItemResult[NicFailoverConfig]]:
        """Replace each NIC's failover configuration with ``settings``. Idempotent. Refused for
        a VM without replication (``replication_not_enabled``)."""
        ...

    def clear_failover_configs(self, host: str, nics: Sequence[tuple[str, str]]) -> list[ItemResult[None]]:
        """Remove each NIC's failover configuration. Idempotent."""
        ...

    def get_replications(self, host: str, vms: Sequence[str]) -> list[Replication]:
        """The replication relationship of each VM (``not_found`` VMs are left out)."""
        ...

    def replicate(self, host: str, action: ReplicaAction, vms: Sequence[str],
                  points: Mapping[str, str] | None = None) -> list[ItemResult[Replication]]:
        """Move each VM's Hyper-V Replica state machine one step::

            Replicating --prepare--> PreparedForFailover --failover--> FailedOverWaitingCompletion
            Replicating --failover (unplanned)--> FailedOverWaitingCompletion
            FailedOverWaitingCompletion --complete--> FailedOver --reverse--> Replicating (swapped)
            PreparedForFailover | FailedOverWaitingCompletion --cancel--> Replicating
            Replicating --start_test--> Replicating + test VM --stop_test--> Replicating

        Idempotent: an action whose target state already holds is ``changed=False``.

        ``points``: for ``failover`` and ``start_test``, the recovery point (replica snapshot
        name) each VM comes up from; a VM not named uses its latest state. A point the replica
        does not hold is ``not_found`` for that VM.
        """
        ...

    def set_power(self, host: str, action: PowerAction, vms: Sequence[str]) -> list[ItemResult[VirtualMachine]]:
        """Start or shut down VMs (test VMs included). Idempotent."""
        ...

    def probe(self, host: str) -> str:
        """A read-only call to ``host`` that proves it answers the agent (preflight); returns what
        it answered. Raises ``timeout``, ``unreachable``, or ``not_found`` for a host the site
        does not have."""
        ...


# ----------------------------------------------------------------------------------- DNS


@runtime_checkable
class Dns(Protocol):
    """One authoritative DNS server (or a server group that behaves as one).

    Errors raised (the whole batch of a zone is atomic, so they are raised, not per item):
    ``dns_prerequisite_failed`` (someone changed a record set since it was read: nothing
    applied); ``dns_refused``, ``dns_not_authoritative``, ``dns_not_zone``, ``dns_bad_key``,
    ``dns_bad_time``, ``dns_rejected``, ``dns_invalid_request`` (permanent); ``timeout``,
    ``unreachable``, ``dns_servfail``, ``dns_bad_response`` (transient); ``dns_batch_failed``
    (some of several update messages failed, see below).

    A driver may carry one zone's changes in several update messages (RFC 2136: ``batch_size``
    changes each). Each message is atomic; when any of several fails, ``apply`` raises
    ``dns_batch_failed`` (:class:`agent.domain.errors.DnsBatchError`, ``.failures`` = one error per
    failed message, naming its records) after trying them all, and the messages that succeeded
    stay applied: re-read. Codes and classes for every driver: :mod:`agent.domain.errors`.
    """

    name: str

    def read(self, zone: str, names: Sequence[tuple[str, RecordType]]) -> list[RecordSet]:
        """The record sets that exist among ``names`` (fully qualified); missing ones left out."""
        ...

    def apply(self, zone: str, changes: Sequence[RecordChange]) -> None:
        """Apply all ``changes`` to ``zone`` atomically, each pinned to its ``expected`` values.
        Idempotent in effect: a change whose ``new_values`` already hold (with its TTL) is left
        out of the update rather than failing its prerequisite."""
        ...

    def verify(self, zone: str, changes: Sequence[RecordChange]) -> DnsVerification | None:
        """After ``apply``: ask every authoritative server of ``zone`` until each answers the new
        data of ``changes`` or the server's verification timeout passes. A server that lags is
        reported, not raised: the update itself is in place and will spread. ``None`` when this
        server is configured not to verify. Never raises for a lagging or unreachable server."""
        ...

    def probe(self, zone: str) -> str:
        """A read-only query that proves this server serves ``zone`` with authority and, where
        updates are signed, knows the agent's key: the SOA of ``zone``, signed with the key the
        updates use and its reply verified (preflight). Returns what it answered. Raises
        ``dns_bad_key`` (unknown key, wrong secret or algorithm), ``dns_bad_time``,
        ``dns_not_authoritative``, ``dns_refused``, ``timeout``, ``unreachable``."""
        ...


@runtime_checkable
class DnsVerification(Protocol):
    """What :meth:`Dns.verify` found: the engine journals ``to_dict()`` with the step and logs
    ``summary()`` when ``ok`` is false."""

    @property
    def ok(self) -> bool:
        """Every authoritative server answers the new data."""
        ...

    def summary(self) -> str:
        """For an operator: one line per server, naming each that lags and what it still answers."""
        ...

    def to_dict(self) -> dict[str, Any]:
        ...


# -------------------------------------------------------------------------------- routes


@runtime_checkable
class Routes(Protocol):
    """Routers (or BGP speakers) of the sites and of third sites. Every route names its router.

    Error codes on items: ``not_found`` (router), ``route_conflict`` (the prefix is already routed
    on that router to another next hop or interface).
    """

    def read_routes(self, router: str, prefixes: Sequence[str] | None = None) -> list[Route]:
        """The routes on ``router``, optionally only for ``prefixes``."""
        ...

    def announce(self, routes: Sequence[Route]) -> list[ItemResult[Route]]:
        """Add each route (``New-NetRoute`` / ``Add-BgpCustomRoute``). Idempotent; all routes of
        one call must name the same router."""
        ...

    def withdraw(self, routes: Sequence[Route]) -> list[ItemResult[None]]:
        """Remove each route. Idempotent (absent: ``changed=False``); one router per call."""
        ...

    def probe(self, router: str) -> str:
        """A read-only call to ``router`` that proves it answers the agent (preflight); returns
        what it answered. Raises ``timeout``, ``unreachable``, or ``not_found`` (router)."""
        ...


# ------------------------------------------------------------------------------- scripts


class ScriptResult(BaseModel):
    """The one JSON document a recovery-plan script writes, plus how the run ended."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    path: str
    succeeded: bool
    output: dict[str, Any] = {}
    error: str | None = None
    duration_s: float = 0.0
    stdout: str = ""
    """What the script printed (its output stream), as the host returned it."""
    stderr: str = ""
    """Its error stream."""


@runtime_checkable
class Scripts(Protocol):
    """Runs recovery-plan script steps (a PowerShell script on a named host).

    Errors raised: ``timeout`` when the script outlives ``timeout_s`` (it is stopped),
    ``not_found`` for an unknown host; a script that ran and failed returns ``succeeded=False``
    with its error text. Parameters are bound, never spliced.
    """

    def run_script(self, host: str, path: str, parameters: dict[str, Any], timeout_s: float) -> ScriptResult:
        ...

    def probe(self, host: str) -> str:
        """A read-only call proving scripts can be run on ``host`` (preflight); runs nothing.
        Raises ``timeout``, ``unreachable``, or ``not_found`` for an unknown host."""
        ...


# ----------------------------------------------------------------- which calls change things

PORT_READS: dict[type, frozenset[str]] = {
    Vmm: frozenset({"read_inventory", "probe"}),
    HyperV: frozenset({"get_failover_configs", "get_replications", "probe"}),
    Dns: frozenset({"read", "verify", "probe"}),
    Routes: frozenset({"read_routes", "probe"}),
    Scripts: frozenset({"probe"}),
}
"""The methods of each port that only read: the audit trail records what they saw, as the
"before" of the changes the same step makes next."""

PORT_CHANGES: dict[type, frozenset[str]] = {
    Vmm: frozenset({"grant_ips", "revoke_ips", "create_test_networks", "delete_test_networks", "connect_nics"}),
    HyperV: frozenset({"set_failover_configs", "clear_failover_configs", "replicate", "set_power"}),
    Dns: frozenset({"apply"}),
    Routes: frozenset({"announce", "withdraw"}),
    Scripts: frozenset({"run_script"}),
}
"""The methods of each port that change an outside system (a script run counts: it may change
anything). Every call of one is in the audit trail; a method in neither table cannot be called
by a step (:mod:`agent.engine.audit` refuses it), so a new one must be classified here."""


def port_methods(protocol: type) -> set[str]:
    """The public methods a port protocol declares (its own and inherited, not ``object``'s)."""
    return {name for klass in protocol.__mro__ if klass not in (object, Protocol, Generic)
            for name, value in vars(klass).items() if callable(value) and not name.startswith("_")}


def unclassified_methods(protocol: type) -> set[str]:
    """The methods of ``protocol`` that are neither a read nor a change (should be none)."""
    classified: set[str] = set()
    for klass in protocol.__mro__:
        classified |= PORT_READS.get(klass, frozenset()) | PORT_CHANGES.get(klass, frozenset())
    return port_methods(protocol) - classified


# ------------------------------------------------------------------------------ the bundle

P = TypeVar("P")


class PortWrapper(Protocol):
    """Turns a port into one with the same interface (a retrying view, a recording one)."""

    def __call__(self, port: P, /) -> P: ...


@dataclass(frozen=True, slots=True)
class Ports:
    """Every outside system of one config, as the engine and the inventory reader receive them:
    a VMM and a Hyper-V port per site (by site name), a DNS port per configured DNS server (by
    server name), one routes port for every router and one script runner for every host.

    Built by :mod:`agent.wiring` from the config; the engine never learns which drivers it got.
    """

    vmm: Mapping[str, Vmm]
    hyperv: Mapping[str, HyperV]
    dns: Mapping[str, Dns]
    routes: Routes
    scripts: Scripts

    def wrapped(self, wrap: PortWrapper) -> Ports:
        """The same ports, each passed through ``wrap`` (which must keep its port's interface),
        e.g. to retry every call of the reads that plan an operation."""

        return Ports(
            vmm={k: wrap(v) for k, v in self.vmm.items()},
            hyperv={k: wrap(v) for k, v in self.hyperv.items()},
            dns={k: wrap(v) for k, v in self.dns.items()},
            routes=wrap(self.routes),
            scripts=wrap(self.scripts),
        )


__all__ = [
    "Dns",
    "DnsVerification",
    "FailoverIpSetting",
    "GrantRequest",
    "HyperV",
    "ItemResult",
    "NicConnection",
    "PORT_CHANGES",
    "PORT_READS",
    "Ports",
    "PowerAction",
    "ReplicaAction",
    "Routes",
    "ScriptResult",
    "Scripts",
    "TestNetworkSpec",
    "Vmm",
    "VmmInventory",
]
