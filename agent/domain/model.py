"""Typed values for what the agent reads from, and writes to, VMM, Hyper-V, DNS and routers.

These are the currency of the ports (``agent.ports``): every driver -- simulated or real --
returns and accepts exactly these types, so a workflow that runs on the simulator runs the same
way on real sites. Real drivers parse the one JSON document each PowerShell script writes into
these models; the simulator builds them from its YAML inventory.

All models are frozen: a value read from a site is a snapshot, never a live handle.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(value: str) -> str:
    return str(ipaddress.ip_address(value))


def _network(value: str) -> str:
    return str(ipaddress.ip_network(value, strict=True))


Address = Annotated[str, AfterValidator(_address)]
"""An IPv4 or IPv6 address in canonical text form."""
Prefix = Annotated[str, AfterValidator(_network)]
"""A network prefix such as ``192.168.1.0/24`` (host bits must be zero)."""

MAX_NAME_LENGTH = 128
"""A bound on object names: what the store's name columns hold (``agent.engine.store``). Neither
the shared reference nor the cmdlet catalog gives VMM or Hyper-V a limit (Virtual Server,
Hyper-V's predecessor, documented 256 characters for a VM name), so a longer one is refused here,
at load, rather than by a database mid-run."""


_NOT_IN_NAMES = frozenset({"Cc", "Zl", "Zp"})
"""Control characters, and the line and paragraph separators (U+2028, U+2029) that split a line."""


def _object_name(value: str) -> str:
    # Control characters: none can be typed in the VMM console or Hyper-V Manager, and each is a
    # way to rewrite an operator's terminal. Everything else VMM takes is taken (quotes, spaces,
    # unicode); output is made safe where it is printed (agent.cli.app).
    bad = next((c for c in value if unicodedata.category(c) in _NOT_IN_NAMES), None)
    if bad is not None:
        raise ValueError(f"a name may not hold control characters or line breaks (found U+{ord(bad):04X})")
    if not value.strip():
        raise ValueError("a name needs a character other than white space")
    return value


Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH), AfterValidator(_object_name)]
"""The name of a VMM or Hyper-V object (VM, NIC, network, pool, host ...) or of a config entry:
anything VMM accepts, except control characters. VMM compares names case-insensitively
(:func:`agent.domain.matching.fold`)."""

RecoveryPointChoice = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_object_name)]
"""Which recovery point a failover uses: ``latest``, ``latest_app_consistent``, or the name of a
replica snapshot (``agent.domain.recovery``)."""


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Isolation(StrEnum):
    """VMM VM network isolation types (``New-SCVMNetwork -IsolationType``)."""

    NO_ISOLATION = "NoIsolation"
    VLAN = "VLANNetwork"
    WNV = "WindowsNetworkVirtualization"


class ReplicationState(StrEnum):
    """The Hyper-V Replica states the agent drives (``VMReplicationState``)."""

    REPLICATING = "Replicating"
    PREPARED_FOR_FAILOVER = "PreparedForFailover"
    FAILED_OVER_WAITING_COMPLETION = "FailedOverWaitingCompletion"
    FAILED_OVER = "FailedOver"


class PowerState(StrEnum):
    RUNNING = "Running"
    OFF = "Off"


# --------------------------------------------------------------------------------------- VMM


class VmSubnet(Frozen):
    """A VM subnet of a VM network (``New-SCVMSubnet``): name, prefix, optional VLAN."""

    name: str
    prefix: Prefix
    vlan_id: int | None = Field(default=None, ge=0, le=4094)
    supports_dhcp: bool = False


class VmNetwork(Frozen):
    """A VMM VM network at one site."""

    name: str
    site: str
    logical_network: str
    isolation: Isolation
    subnets: tuple[VmSubnet, ...] = ()
    test_network: bool = False
    """Created by the agent for a test failover (isolated, deleted at cleanup)."""
    description: str = ""

    def subnet(self, name: str) -> VmSubnet | None:
        return next((s for s in self.subnets if s.name == name), None)


class StaticIpPool(Frozen):
    """A VMM static IP address pool (``New-SCStaticIPAddressPool``) on one VM subnet."""

    name: str
    site: str
    vm_network: str
    vm_subnet: str
    prefix: Prefix
    range_start: Address
    range_end: Address
    reserved: tuple[Address, ...] = ()
    """``-IPAddressReservedSet``: never handed out."""
    gateway: Address | None = None
    dns_servers: tuple[Address, ...] = ()
    dns_suffix: str | None = None

    @model_validator(mode="after")
    def _range_inside_prefix(self) -> StaticIpPool:
        net = ipaddress.ip_network(self.prefix)
        start, end = ipaddress.ip_address(self.range_start), ipaddress.ip_address(self.range_end)
        if start not in net or end not in net:
            raise ValueError(f"pool {self.name}: range {start}-{end} is not inside {net}")
        if int(start) > int(end):
            raise ValueError(f"pool {self.name}: range start {start} is after range end {end}")
        return self

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(self.prefix)

    @property
    def family(self) -> int:
        return self.network.version

    def contains(self, address: str) -> bool:
        """True when ``address`` lies in the allocatable range (reserved ones included)."""
        ip = ipaddress.ip_address(address)
        return (
            ip.version == self.family
            and int(ipaddress.ip_address(self.range_start)) <= int(ip) <= int(ipaddress.ip_address(self.range_end))
        )


class IpGrant(Frozen):
    """An address granted from a static pool (``Grant-SCIPAddress``), owned by one object."""

    pool: str
    site: str
    address: Address
    owner_type: Literal["VirtualNetworkAdapter", "VirtualMachine", "None"] = "VirtualNetworkAdapter"
    owner_id: str
    description: str = ""


class IpConfiguration(Frozen):
    """One IP configuration of a NIC (a NIC may carry several: primary + secondaries)."""

    mode: Literal["static", "dhcp"]
    address: Address | None = None
    prefix_length: int | None = Field(default=None, ge=0, le=128)

    @model_validator(mode="after")
    def _static_has_address(self) -> IpConfiguration:
        if self.mode == "static" and (self.address is None or self.prefix_length is None):
            raise ValueError("a static IP configuration needs address and prefix_length")
        if self.mode == "dhcp" and self.address is not None:
            raise ValueError("a DHCP IP configuration carries no address")
        return self

    @property
    def family(self) -> int | None:
        return ipaddress.ip_address(self.address).version if self.address else None


class Nic(Frozen):
    """A VM's virtual network adapter as VMM sees it."""

    id: str
    """VMM's adapter ID (the ``-GrantToObjectID`` of its reservations)."""
    name: str
    vm_network: str | None = None
    """None: not connected (e.g. a replica with no network mapping, a fresh test VM)."""
    vm_subnet: str | None = None
    ip_configurations: tuple[IpConfiguration, ...] = ()

    @property
    def is_static(self) -> bool:
        return any(c.mode == "static" for c in self.ip_configurations)


class VirtualMachine(Frozen):
    """A VM at one site, as VMM and its Hyper-V host see it."""

    name: str
    site: str
    host: str
    role: Literal["primary", "replica", "test"] = "primary"
    power_state: PowerState = PowerState.RUNNING
    nics: tuple[Nic, ...] = ()

    def nic(self, name: str) -> Nic | None:
        return next((n for n in self.nics if n.name == name), None)


# ------------------------------------------------------------------------------- Hyper-V


class FailoverIpSetting(Frozen):
    """One failover IP configuration of a replica NIC (``Set-VMNetworkAdapterFailoverConfiguration``;
    several per NIC through ``Msvm_FailoverNetworkAdapterSettingData``)."""

    address: Address
    prefix_length: int = Field(ge=0, le=128)
    gateway: Address | None = None
    dns_servers: tuple[Address, ...] = ()

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version


class NicFailoverConfig(Frozen):
    """The failover TCP/IP configuration stored on one replica NIC (empty: none set)."""

    vm: str
    nic: str
    host: str
    settings: tuple[FailoverIpSetting, ...] = ()


TEST_VM_SUFFIX = " - Test"
"""Hyper-V names a test-failover VM ``"<vm> - Test"`` (``Start-VMFailover -AsTest``)."""


def name_test_vm(vm: str) -> str:
    """The name Hyper-V gives the test-failover VM of ``vm``."""
    return vm + TEST_VM_SUFFIX


class Replication(Frozen):
    """A Hyper-V Replica relationship, seen from the pair of hosts."""

    vm: str
    primary_site: str
    primary_host: str
    replica_site: str
    replica_host: str
    state: ReplicationState = ReplicationState.REPLICATING
    test_vm: str | None = None
    """Name of the running test-failover VM, if any (``VMReplication.TestVirtualMachine``)."""
    recovery_points: tuple[RecoveryPoint, ...] = ()
    """The replica's recovery points, oldest first, as its host lists them (the primary host
    has none to list: read on the replica host)."""
    failover_point: str | None = None
    """The recovery point the pending failover or running test failover used, where the driver
    knows it (None: the latest, or not known)."""


class RecoveryPoint(Frozen):
    """One recovery point of a replica: a replica snapshot (``Get-VMSnapshot``, ``SnapshotType``
    ``Replica`` or ``AppConsistentReplica``)."""

    name: RecoveryPointChoice
    created: datetime
    app_consistent: bool = False


Replication.model_rebuild()


# ----------------------------------------------------------------------------------- DNS


class RecordType(StrEnum):
    A = "A"
    AAAA = "AAAA"
    PTR = "PTR"


class RecordSet(Frozen):
    """All records of one name and type in a zone (an RRset). ``values`` sorted."""

    zone: str
    name: str
    """Fully qualified, lower case, with the trailing dot."""
    type: RecordType
    ttl: int = Field(ge=0)
    values: tuple[str, ...]

    @model_validator(mode="after")
    def _canonical(self) -> RecordSet:
        if not self.name.endswith("."):
            raise ValueError(f"record name {self.name!r} must be fully qualified (end with '.')")
        if not self.zone.endswith("."):
            raise ValueError(f"zone {self.zone!r} must be fully qualified (end with '.')")
        return self


class RecordChange(Frozen):
    """Replace one RRset, pinned to what the agent expects to find there.

    ``expected``: the RRset values the caller believes are there now (empty tuple: the RRset must
    not exist). ``new_values`` empty deletes the RRset. The change applies only if the server
    still holds ``expected``; otherwise the whole batch of its zone is refused.
    """

    zone: str
    name: str
    type: RecordType
    ttl: int = Field(ge=0)
    expected: tuple[str, ...] = ()
    new_values: tuple[str, ...] = ()


# -------------------------------------------------------------------------------- routes


class Route(Frozen):
    """A route for a prefix on one router.

    A static route (router kinds ``netroute``, ``script``, ``sim``) has a next hop or an
    interface, and a metric. With neither it is an *announced network*: a BGP custom route
    (router kind ``bgp``, ``Add-BgpCustomRoute -Network``), which the speaker advertises as its
    own -- the next hop its peers use is the speaker itself and there is no metric to set, so
    ``metric`` keeps its default and two such routes are the same when their prefixes are.
    Which kind a router takes is the config's rule (``agent.configrefs``), not this model's."""

    router: str
    prefix: Prefix
    next_hop: Address | None = None
    interface: str | None = None
    metric: int = Field(default=256, ge=0, le=65535)

    @property
    def announced_network(self) -> bool:
        return self.next_hop is None and self.interface is None


# ------------------------------------------------------------------------------ inventory


class Inventory(Frozen):
    """Everything the planner needs to know about both sites (and third-site routers)."""

    vm_networks: tuple[VmNetwork, ...] = ()
    pools: tuple[StaticIpPool, ...] = ()
    grants: tuple[IpGrant, ...] = ()
    vms: tuple[VirtualMachine, ...] = ()
    replications: tuple[Replication, ...] = ()
    failover_configs: tuple[NicFailoverConfig, ...] = ()
    record_sets: tuple[RecordSet, ...] = ()
    routes: tuple[Route, ...] = ()
    stale: tuple[str, ...] = ()
    """Parts of a site that could not be read and were taken from the last good read."""
    unreadable: tuple[tuple[str, str], ...] = ()
    """(VM, why): VMs whose Hyper-V state a host refused to give (a permanent error); the others
    of that host were read one by one."""
