"""The typed step contract: the arguments of every step action, as journalled with the step.

A step's arguments are fixed when its operation is created and stored in the journal, so a
resumed operation does exactly what was planned. Each action (``agent.engine.actions``) declares
the model of its arguments here; the builders (``agent.engine.operations``) construct them and
the journal stores ``model_dump(mode="json")`` with :data:`SPEC_VERSION`.

Schema versions of a stored step's arguments:

* **1** -- the untyped dicts of commit 2e96aca and earlier: the same keys as today's models,
  plus the step's ``stage`` inside them, and no version recorded (the store's migration 0003
  marks those rows 1);
* **2** -- these models; the stage has a column of its own.

:func:`parse_args` reads any supported version, so an operation journalled by an older agent
resumes after an upgrade; an unknown version is refused before anything runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.domain.model import FailoverIpSetting, Route
from agent.errors import RefusedError
from agent.ports import PowerAction, ReplicaAction

SPEC_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Item(Args):
    """One item of a batch: ``key`` names it in outcomes, ``vm`` is the VM it belongs to (a
    failed VM's items are skipped by later steps)."""

    key: str
    vm: str | None = None


class StepArgs(Args):
    items: tuple[Item, ...] = ()


# ------------------------------------------------------------------------------------ VMM


class ReserveItem(Item):
    vm: str
    nic: str
    nic_id: str | None
    """None for a test VM's NIC, which exists only once the test failover has started."""
    owner_vm: str
    """The VM whose NIC holds the grant: the replica, or its test VM."""
    pool: str
    address: str
    ip_index: int
    purpose: Literal["failover", "test"]
    flexible: bool
    """The plan chose the address freely (not a retained source address): if someone took it
    meanwhile, any free address of the pool will do."""


class ReserveArgs(StepArgs):
    site: str
    items: tuple[ReserveItem, ...] = ()


class ConnectItem(Item):
    vm: str
    nic: str
    purpose: Literal["failover", "test"]
    target_vm: str
    vm_network: str | None
    vm_subnet: str | None = None
    addresses: tuple[tuple[str, int], ...] = ()
    missing_ok: bool = False
    """Cleanup disconnects test NICs whose test VM may already be gone."""


class ConnectArgs(StepArgs):
    site: str
    items: tuple[ConnectItem, ...] = ()


class TestNetworkItem(Item):
    __test__ = False  # not a pytest test class, despite the name
    name: str
    copy_of: str


class CreateTestNetworksArgs(StepArgs):
    site: str
    items: tuple[TestNetworkItem, ...] = ()


class NamedItem(Item):
    name: str


class DeleteTestNetworksArgs(StepArgs):
    site: str
    items: tuple[NamedItem, ...] = ()


class RevokeTestGrantsArgs(StepArgs):
    site: str
    test_operation: str


# -------------------------------------------------------------------------------- Hyper-V


class HostVmItem(Item):
    vm: str
    target_vm: str
    """The VM acted on: the VM itself, or its test VM."""
    recovery_point: str | None = None
    """A failover or test failover: the replica snapshot it comes up from (None: the latest)."""


class PowerArgs(StepArgs):
    site: str
    host: str
    items: tuple[HostVmItem, ...] = ()
    power: PowerAction
    tolerate_unreachable: bool = False
    """Unplanned failover: the source site may be gone; an unreachable host skips its items."""
    restore_from: str | None = None
    """Start only the VMs that operation found running before it stopped them (a cancel puts
    power back as it was); None: act on every item."""


class ReplicateArgs(StepArgs):
    site: str
    host: str
    items: tuple[HostVmItem, ...] = ()
    replica_action: ReplicaAction
    tolerate_unreachable: bool = False
    to_fail_over_again: bool = False
    """A cancel that a failover to another recovery point follows at once: done on the replica
    host whatever the primary's state, since the replica is started again, not the primary."""


class PlannedSetting(FailoverIpSetting):
    ip_index: int
    """Which of the NIC's reservations the address comes from (negative: none, a fixed address)."""

    def setting(self, address: str) -> FailoverIpSetting:
        return FailoverIpSetting.model_validate({**self.model_dump(exclude={"ip_index"}), "address": address})


class FailoverIpItem(Item):
    vm: str
    nic: str
    settings: tuple[PlannedSetting, ...]


class SetFailoverArgs(StepArgs):
    site: str
    host: str
    items: tuple[FailoverIpItem, ...] = ()


class NicItem(Item):
    vm: str
    nic: str


class RestoreFailoverArgs(StepArgs):
    site: str
    host: str
    scope: str
    """The operation whose snapshots are put back."""
    items: tuple[NicItem, ...] = ()


class AwaitItem(Item):
    vm: str
    host: str


class AwaitFailoverArgs(StepArgs):
    site: str
    states: tuple[str, ...]
    """The replication states that count as done."""
    require_test_vm: bool = False
    instruction: str
    """What the operator or orchestrator is asked to do; ``{vms}`` names the VMs still pending."""
    items: tuple[AwaitItem, ...] = ()


# --------------------------------------------------------------------------------- routes


class RouteItem(Item):
    prefix: str
    route: Route


class RouteArgs(StepArgs):
    router: str
    items: tuple[RouteItem, ...] = ()
    tolerate_unreachable: bool = False


class RestoreRoutesArgs(StepArgs):
    router: str
    scope: str


# ------------------------------------------------------------------------------------ DNS


class AddressSource(Args):
    """A value of a planned record that is an address this operation reserves: the record is
    written with what VMM granted (journalled by the reserve step), not the plan's guess."""

    vm: str
    nic: str
    ip_index: int
    purpose: Literal["failover", "test"]
    planned: str
    host: str | None = None
    """PTR only: the host name the planned address adds to this PTR."""


class RecordItem(Item):
    name: str
    type: Literal["A", "AAAA", "PTR"]
    ttl: int
    old_values: tuple[str, ...]
    new_values: tuple[str, ...]
    force: bool = False
    sources: tuple[AddressSource, ...] = ()
    """Where reserved addresses among ``new_values`` come from (A/AAAA: the values; PTR: the
    host names they add). Empty in journals written before it existed: the plan is written."""


class DnsApplyArgs(StepArgs):
    server: str
    zone: str
    items: tuple[RecordItem, ...] = ()


class DnsRestoreArgs(StepArgs):
    server: str
    zone: str
    scope: str
    """The operation whose written records are put back (or get their TTL back)."""


class WaitTtlArgs(StepArgs):
    seconds: int
    key: str
    """Names the deadline journalled on the first attempt."""


# --------------------------------------------------------------------- scripts and pauses


class ManualArgs(StepArgs):
    instruction: str


class LeftOutItem(Item):
    vm: str
    reason: str


class LeftOutArgs(StepArgs):
    items: tuple[LeftOutItem, ...] = ()


CONTEXT_PARAMETER = "Context"
"""The parameter a recovery-plan script is told of its operation by (powershell/README.md)."""


class ScriptArgs(StepArgs):
    host: str
    path: str
    timeout_s: float = 600
    parameters: dict[str, Any] = {}
    context: dict[str, Any] | None = None
    """What the script is told of the operation (``operations.script_context``), bound as its
    ``Context`` parameter (one JSON string); None in steps journalled before it existed."""

    def bound(self) -> dict[str, Any]:
        """The parameters the script is run with: the config's, plus ``Context``."""
        if self.context is None:
            return dict(self.parameters)
        return {**self.parameters, CONTEXT_PARAMETER: json.dumps(self.context, sort_keys=True)}


# ------------------------------------------------------------------------------- reading


class IncompatibleStep(RefusedError):
    """A journalled step this agent version cannot read (another schema, an unknown action)."""

    code = "incompatible_step"


def upgrade(spec: Mapping[str, Any], version: int) -> tuple[int | None, dict[str, Any]]:
    """(stage, arguments in today's shape) of a stored spec of schema ``version``."""

    if version not in SUPPORTED_VERSIONS:
        raise IncompatibleStep(f"schema version {version} of a journalled step is not one this agent reads "
                               f"({', '.join(map(str, SUPPORTED_VERSIONS))})", version=version)
    args = dict(spec)
    stage = args.pop("stage", None) if version == 1 else None
    return stage, args


def parse_args(model: type[StepArgs], spec: Mapping[str, Any], version: int, *, step: str) -> StepArgs:
    """A stored step's arguments as ``model``, from any supported schema version."""

    _, args = upgrade(spec, version)
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise IncompatibleStep(f"step {step}: its journalled arguments do not fit (schema version {version}): "
                               f"{where}: {first['msg']}", step=step, version=version) from None
