"""The inventory's YAML schema: one strict pydantic model per mapping of the file.

Each model checks its own values (unknown keys, malformed addresses, out-of-range numbers), so
``load_model`` reports them with their lines; rules that span several entries (names, references,
overlaps) are :mod:`agent.drivers.sim.checks`. The format itself is described in
:mod:`agent.drivers.sim.inventory`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.domain.model import (
    Address,
    FailoverIpSetting,
    Isolation,
    Name,
    PowerState,
    Prefix,
    RecordType,
    RecoveryPointChoice,
)
from agent.drivers.sim.addresses import interface_text

Interface = Annotated[str, AfterValidator(interface_text)]
"""An address with its prefix length, ``192.168.1.10/24``."""


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------- VMM


class GrantSpec(Spec):
    """An address already granted from the pool: to a NIC of a VM at this site (``owner:
    vm/nic``) or to an outside object (``owner_id``)."""

    address: Address
    owner: str | None = None
    owner_id: str | None = None
    owner_type: Literal["VirtualNetworkAdapter", "VirtualMachine", "None"] = "VirtualNetworkAdapter"
    description: str = ""

    @model_validator(mode="after")
    def _one_owner(self) -> GrantSpec:
        if (self.owner is None) == (self.owner_id is None):
            raise ValueError("give exactly one of owner (vm/nic at this site) or owner_id")
        return self


class PoolSpec(Spec):
    name: Name
    prefix: Prefix | None = None
    """The pool's subnet (``-Subnet``); default: its VM subnet's prefix."""
    range: tuple[Address, Address]
    """First and last allocatable address."""
    reserved: list[Address] = Field(default_factory=list)
    gateway: Address | None = None
    dns_servers: list[Address] = Field(default_factory=list)
    dns_suffix: str | None = None
    grants: list[GrantSpec] = Field(default_factory=list)


class SubnetSpec(Spec):
    name: Name
    prefix: Prefix
    vlan_id: int | None = Field(default=None, ge=0, le=4094)
    supports_dhcp: bool = False
    pools: list[PoolSpec] = Field(default_factory=list)


class VmNetworkSpec(Spec):
    name: Name
    logical_network: Name
    isolation: Isolation
    subnets: list[SubnetSpec] = Field(default_factory=list)
    description: str = ""


class NicSpec(Spec):
    name: Name
    id: str | None = None
    vm_network: Name | None = None
    vm_subnet: Name | None = None
    """Default: the network's first subnet."""
    addresses: list[Interface] = Field(default_factory=list)
    """Static IP configurations, ``address/prefix-length``, primary first."""
    dhcp: bool = False

    @model_validator(mode="after")
    def _connected_for_addresses(self) -> NicSpec:
        if self.vm_network is None and (self.addresses or self.dhcp or self.vm_subnet):
            raise ValueError("a NIC with addresses, dhcp or vm_subnet needs vm_network")
        return self


class ReplicaNicSpec(Spec):
    """How a replica NIC starts out: connected to a network at the replica site, and failover
    IP settings already stored on it."""

    name: Name
    vm_network: Name | None = None
    vm_subnet: Name | None = None
    failover: list[FailoverIpSetting] = Field(default_factory=list)


class RecoveryPointSpec(Spec):
    """A recovery point the replica holds (a replica snapshot), as ``Get-VMSnapshot`` lists it."""

    name: RecoveryPointChoice
    created: AwareDatetime
    app_consistent: bool = False


class ReplicaSpec(Spec):
    site: Name
    host: Name
    nics: list[ReplicaNicSpec] = Field(default_factory=list)
    recovery_points: list[RecoveryPointSpec] = Field(default_factory=list)
    """Besides the latest state, which is always there (a failover with no point named)."""


class VmSpec(Spec):
    name: Name
    host: Name
    power: PowerState = PowerState.RUNNING
    nics: list[NicSpec] = Field(default_factory=list)
    replica: ReplicaSpec | None = None


class HostSpec(Spec):
    name: Name
    max_failover_ips_per_family: int | None = Field(default=None, ge=1)
    """How many failover addresses of one family a NIC may carry (the PowerShell cmdlet sets one;
    the WMI method takes arrays). Default: no limit."""


class SiteSpec(Spec):
    name: Name
    hosts: list[HostSpec] = Field(default_factory=list)
    logical_networks: list[Name] = Field(default_factory=list)
    vm_networks: list[VmNetworkSpec] = Field(default_factory=list)
    vms: list[VmSpec] = Field(default_factory=list)

    @field_validator("hosts", mode="before")
    @classmethod
    def _host_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


# ----------------------------------------------------------------------- DNS and routers


class RecordSpec(Spec):
    name: str = Field(min_length=1)
    """Relative to the zone (``web01``), ``@`` for the apex, or fully qualified (trailing dot)."""
    type: RecordType
    ttl: int = Field(default=3600, ge=0)
    values: list[str] = Field(min_length=1)


class ZoneSpec(Spec):
    name: str = Field(min_length=1)
    records: list[RecordSpec] = Field(default_factory=list)


class DnsServerSpec(Spec):
    name: Name
    zones: list[ZoneSpec] = Field(default_factory=list)


class RouteSpec(Spec):
    prefix: Prefix
    next_hop: Address | None = None
    interface: str | None = None
    metric: int = Field(default=256, ge=0, le=65535)

    @model_validator(mode="after")
    def _has_target(self) -> RouteSpec:
        if self.next_hop is None and self.interface is None:
            raise ValueError("a route needs next_hop or interface")
        return self


class RouterSpec(Spec):
    name: Name
    site: Name
    routes: list[RouteSpec] = Field(default_factory=list)

