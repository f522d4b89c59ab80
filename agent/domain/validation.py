"""Refusals: the rules of the source documents that stop a plan before anything changes.

A plan that breaks a rule is refused as a whole with :class:`PlanRefused`, which carries *every*
reason found (not just the first), each with a stable ``code``, a message that names the VM, NIC,
network or pool concerned, and the same facts as structured ``fields``. The operator fixes the
inventory or the config and plans again.

Reason codes (stable; the API and the journal use them):

==============================  ===========================================================
``unknown_plan``                no recovery plan of that name in the config
``vm_not_found``                a plan VM is not in the inventory (at its primary site)
``vm_not_replicated``           a plan VM has no Hyper-V Replica relationship
``replica_not_found``           the replica VM is missing at the replica site
``replica_nic_not_found``       the replica VM lacks a NIC the primary has
``mixed_directions``            the plan's VMs do not all fail over between the same two sites
``no_network_mapping``          a static NIC's network has no mapping: the replica would be
                                left unconnected
``ambiguous_reverse_mapping``   failback through a network that is the target of several
                                mappings: which source network to go back to is unknown
``mapping_site_mismatch``       the mapping's target site is not the VM's replica site
``target_network_not_found``    the mapped target VM network does not exist at the target site
``no_static_pool``              a static IP configuration's target (or test) subnet has no pool
                                of its family: "IP address allocation will fail"
``wnv_target_without_pool``     a WNV target subnet has no static pool (needed whatever the
                                source uses)
``test_network_not_found``      the ``existing`` test network does not exist at the target site
``test_network_not_isolated``   the ``existing`` test network is neither VLAN nor WNV
``test_network_name_taken``     the name of an auto-created test network is held by a network
                                that is not a test network
``test_network_needs_pools``    replica on DHCP + VLAN isolation with a WNV test network
``test_network_no_subnets``     replica on a No Isolation network with a WNV test network
``pool_exhausted``              a pool has no free address left for some IP configurations
``partial_subnet_failover``     a retained, non-stretched subnet would fail over only in part
``retained_subnet_undeclared``  a retained address lies in no subnet declared under ``subnets``
``override_*``                  an address override that cannot be honoured: not applicable
                                (no such NIC / IP configuration, DHCP, no test network), of the
                                other family, outside every pool of its subnet, reserved, taken
                                by another VM, or given twice
``invalid_dns_name``            a VM's name gives no valid DNS host name and ``dns.hostnames``
                                gives it none
``vm_state_unreadable``         a plan VM's Hyper-V state could not be read (a planned failover
                                stops; an unplanned one leaves the VM out, naming it)
``recovery_point_not_found``    the named recovery point is not among the replica's points
``no_app_consistent_point``     ``latest_app_consistent`` asked of a replica that has none
==============================  ===========================================================

:func:`check_config_against_inventory` is the cheaper, plan-independent cross-check of the config
against what the sites actually hold; it reports key paths, which the config loader turns into
file:line errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from agent.config import AgentConfig
from agent.domain.matching import Names, Nearest, did_you_mean
from agent.domain.model import Inventory, Isolation, VmNetwork
from agent.errors import RefusedError

UNKNOWN_PLAN = "unknown_plan"
VM_NOT_FOUND = "vm_not_found"
VM_NOT_REPLICATED = "vm_not_replicated"
REPLICA_NOT_FOUND = "replica_not_found"
REPLICA_NIC_NOT_FOUND = "replica_nic_not_found"
MIXED_DIRECTIONS = "mixed_directions"
NO_NETWORK_MAPPING = "no_network_mapping"
AMBIGUOUS_REVERSE_MAPPING = "ambiguous_reverse_mapping"
MAPPING_SITE_MISMATCH = "mapping_site_mismatch"
TARGET_NETWORK_NOT_FOUND = "target_network_not_found"
NO_STATIC_POOL = "no_static_pool"
WNV_TARGET_WITHOUT_POOL = "wnv_target_without_pool"
TEST_NETWORK_NOT_FOUND = "test_network_not_found"
TEST_NETWORK_NOT_ISOLATED = "test_network_not_isolated"
TEST_NETWORK_NAME_TAKEN = "test_network_name_taken"
TEST_NETWORK_NEEDS_POOLS = "test_network_needs_pools"
TEST_NETWORK_NO_SUBNETS = "test_network_no_subnets"
POOL_EXHAUSTED = "pool_exhausted"
PARTIAL_SUBNET_FAILOVER = "partial_subnet_failover"
RETAINED_SUBNET_UNDECLARED = "retained_subnet_undeclared"
INVALID_DNS_NAME = "invalid_dns_name"
VM_STATE_UNREADABLE = "vm_state_unreadable"
RECOVERY_POINT_NOT_FOUND = "recovery_point_not_found"
NO_APP_CONSISTENT_POINT = "no_app_consistent_point"

REFUSAL_CODES: tuple[str, ...] = (
    UNKNOWN_PLAN, VM_NOT_FOUND, VM_NOT_REPLICATED, REPLICA_NOT_FOUND, REPLICA_NIC_NOT_FOUND,
    MIXED_DIRECTIONS, NO_NETWORK_MAPPING, AMBIGUOUS_REVERSE_MAPPING, MAPPING_SITE_MISMATCH,
    TARGET_NETWORK_NOT_FOUND, NO_STATIC_POOL, WNV_TARGET_WITHOUT_POOL, TEST_NETWORK_NOT_FOUND,
    TEST_NETWORK_NOT_ISOLATED, TEST_NETWORK_NAME_TAKEN, TEST_NETWORK_NEEDS_POOLS,
    TEST_NETWORK_NO_SUBNETS, POOL_EXHAUSTED, PARTIAL_SUBNET_FAILOVER, RETAINED_SUBNET_UNDECLARED,
    INVALID_DNS_NAME, VM_STATE_UNREADABLE, RECOVERY_POINT_NOT_FOUND, NO_APP_CONSISTENT_POINT,
)

# Address overrides (config ``address_overrides``): refused by agent.domain.planning.overrides,
# each naming the VM, NIC, IP configuration and pool.
OVERRIDE_NOT_APPLICABLE = "override_not_applicable"
OVERRIDE_FAMILY_MISMATCH = "override_family_mismatch"
OVERRIDE_OUTSIDE_POOL = "override_outside_pool"
OVERRIDE_RESERVED = "override_reserved"
OVERRIDE_TAKEN = "override_taken"
OVERRIDE_DUPLICATE = "override_duplicate"
OVERRIDE_CODES: tuple[str, ...] = (
    OVERRIDE_NOT_APPLICABLE, OVERRIDE_FAMILY_MISMATCH, OVERRIDE_OUTSIDE_POOL, OVERRIDE_RESERVED,
    OVERRIDE_TAKEN, OVERRIDE_DUPLICATE,
)
REFUSAL_CODES += OVERRIDE_CODES


@dataclass(frozen=True, slots=True)
class Refusal:
    """One reason a plan is refused."""

    code: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.fields}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Refusal:
        rest = {k: v for k, v in data.items() if k not in ("code", "message")}
        return cls(data["code"], data["message"], rest)


class PlanRefused(RefusedError):
    """The plan breaks one or more rules; nothing has changed anywhere.

    ``reasons`` holds every :class:`Refusal` found, in a deterministic order; ``to_dict()``
    carries them as ``reasons`` (a list of dicts) for the API.
    """

    code = "plan_refused"

    def __init__(self, message: str, reasons: Sequence[Refusal | dict[str, Any]] = (), **fields: Any) -> None:
        self.reasons: tuple[Refusal, ...] = tuple(
            r if isinstance(r, Refusal) else Refusal.from_dict(r) for r in reasons
        )
        super().__init__(message, reasons=[r.to_dict() for r in self.reasons], **fields)

    @property
    def codes(self) -> list[str]:
        return [r.code for r in self.reasons]

    @classmethod
    def of(cls, reasons: Sequence[Refusal], *, plan: str, kind: str) -> PlanRefused:
        head = f"{kind} failover of plan {plan} refused ({len(reasons)} reason{'s' if len(reasons) != 1 else ''})"
        message = head + ":\n" + "\n".join(f"- [{r.code}] {r.message}" for r in reasons)
        return cls(message, reasons, plan=plan, kind=kind)


def names(items: Sequence[str], limit: int = 10) -> str:
    """``a, b, c`` -- or ``a, b, ... and 40 more`` so a message stays readable at scale (the
    full list is in the refusal's fields)."""
    items = list(items)
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f" and {len(items) - limit} more"


# ----------------------------------------------------------------------- refusal builders


def unknown_plan(plan: str, known: Sequence[str]) -> Refusal:
    return Refusal(
        UNKNOWN_PLAN,
        f"no recovery plan named {plan!r} in the config (known: {names(sorted(known)) or 'none'})"
        f"{did_you_mean(plan, known)}",
        {"plan": plan},
    )


def vm_not_found(vm: str, site: str | None = None, nearest: Nearest | None = None) -> Refusal:
    where = f" at site {site}" if site else ""
    hint = nearest.hint(vm) if nearest is not None else ""
    return Refusal(VM_NOT_FOUND, f"VM {vm} is not in the inventory{where}{hint}", {"vm": vm, "site": site})


def vm_not_replicated(vm: str) -> Refusal:
    return Refusal(
        VM_NOT_REPLICATED,
        f"VM {vm} has no Hyper-V Replica relationship: it cannot fail over",
        {"vm": vm},
    )


def vm_state_unreadable(vm: str, why: str) -> Refusal:
    return Refusal(
        VM_STATE_UNREADABLE,
        f"VM {vm}: its Hyper-V state cannot be read ({why}); nothing was changed. Fix what the host "
        "reports, or fail over without it by taking it out of the recovery plan",
        {"vm": vm, "reason": why},
    )


def replica_not_found(vm: str, site: str, host: str) -> Refusal:
    return Refusal(
        REPLICA_NOT_FOUND,
        f"replica of VM {vm} is not in the inventory of site {site} (host {host})",
        {"vm": vm, "site": site, "host": host},
    )


def replica_nic_not_found(vm: str, nic: str, site: str) -> Refusal:
    return Refusal(
        REPLICA_NIC_NOT_FOUND,
        f"replica of VM {vm} at site {site} has no NIC {nic}",
        {"vm": vm, "nic": nic, "site": site},
    )


def mixed_directions(directions: dict[tuple[str, str], list[str]]) -> Refusal:
    parts = [f"{src} -> {dst}: {names(vms)}" for (src, dst), vms in sorted(directions.items())]
    return Refusal(
        MIXED_DIRECTIONS,
        "the plan's VMs do not all fail over in the same direction (" + "; ".join(parts) + ")",
        {"directions": {f"{s}->{d}": list(v) for (s, d), v in sorted(directions.items())}},
    )


def no_network_mapping(vm: str, nic: str, network: str, site: str) -> Refusal:
    return Refusal(
        NO_NETWORK_MAPPING,
        f"VM {vm} NIC {nic} on network {network} has no network mapping: the replica would not be connected",
        {"vm": vm, "nic": nic, "vm_network": network, "site": site},
    )


def ambiguous_reverse_mapping(vm: str, nic: str, network: str, site: str, indexes: Sequence[int]) -> Refusal:
    where = ", ".join(f"network_mappings[{i}]" for i in indexes)
    return Refusal(
        AMBIGUOUS_REVERSE_MAPPING,
        f"VM {vm} NIC {nic}: network {network} at {site} is the target of several mappings ({where}); "
        f"add a mapping with source {site}/{network} to say where the failback goes",
        {"vm": vm, "nic": nic, "vm_network": network, "site": site, "mappings": list(indexes)},
    )


def mapping_site_mismatch(vm: str, nic: str, mapping_target: str, replica_site: str, index: int) -> Refusal:
    return Refusal(
        MAPPING_SITE_MISMATCH,
        f"VM {vm} NIC {nic}: network_mappings[{index}] maps to site {mapping_target}, "
        f"but the VM replicates to {replica_site}",
        {"vm": vm, "nic": nic, "site": replica_site, "mapping": index},
    )


def target_network_not_found(network: str, site: str, nics: Sequence[str]) -> Refusal:
    return Refusal(
        TARGET_NETWORK_NOT_FOUND,
        f"target VM network {network} does not exist at site {site} (needed by {names(nics)})",
        {"vm_network": network, "site": site, "nics": list(nics)},
    )


def no_static_pool(
    network: str, subnet: str, site: str, family: int, nics: Sequence[str], purpose: str = "failover"
) -> Refusal:
    what = "test VM network" if purpose == "test" else "target VM network"
    return Refusal(
        NO_STATIC_POOL,
        f"{what} {network} subnet {subnet or '(none)'} at {site} has no IPv{family} static IP pool: "
        f"IP address allocation will fail for {names(nics)}",
        {"vm_network": network, "vm_subnet": subnet, "site": site, "family": family,
         "nics": list(nics), "purpose": purpose},
    )


def wnv_target_without_pool(network: str, subnet: str, site: str, nics: Sequence[str]) -> Refusal:
    return Refusal(
        WNV_TARGET_WITHOUT_POOL,
        f"target VM network {network} subnet {subnet or '(none)'} at {site} uses Windows Network "
        f"Virtualization and has no static IP pool; a WNV network needs one whatever the source uses "
        f"(affects {names(nics)})",
        {"vm_network": network, "vm_subnet": subnet, "site": site, "nics": list(nics)},
    )


def missing_test_network(network: str, site: str, mapping: int) -> Refusal:
    return Refusal(
        TEST_NETWORK_NOT_FOUND,
        f"test network {network} (network_mappings[{mapping}].test_network) does not exist at site {site}",
        {"vm_network": network, "site": site, "mapping": mapping},
    )


def unisolated_test_network(network: str, site: str, isolation: str, mapping: int) -> Refusal:
    return Refusal(
        TEST_NETWORK_NOT_ISOLATED,
        f"test network {network} at {site} is not isolated (isolation {isolation}); "
        f"a test failover needs a VLAN or WNV network so it cannot reach production",
        {"vm_network": network, "site": site, "isolation": isolation, "mapping": mapping},
    )


def taken_test_network_name(network: str, site: str) -> Refusal:
    return Refusal(
        TEST_NETWORK_NAME_TAKEN,
        f"cannot create test network {network} at {site}: a VM network of that name exists and is "
        f"not a test network",
        {"vm_network": network, "site": site},
    )


def incompatible_test_network(
    *, target: VmNetwork, test_network: str, replica_on_dhcp: bool, nics: Sequence[str]
) -> Refusal | None:
    """The source documents' combinations that cannot work with a WNV test network.

    Only called when the test network is WNV (an existing WNV network, or one to be created):
    a DHCP replica on a VLAN network has no pools to copy, a No Isolation network has no VM
    subnets to copy.
    """
    if target.isolation == Isolation.NO_ISOLATION:
        return Refusal(
            TEST_NETWORK_NO_SUBNETS,
            f"replica network {target.name} at {target.site} has No Isolation: a WNV test network "
            f"({test_network}) has no subnets to copy (affects {names(nics)})",
            {"vm_network": target.name, "site": target.site, "test_network": test_network, "nics": list(nics)},
        )
    if replica_on_dhcp and target.isolation == Isolation.VLAN:
        return Refusal(
            TEST_NETWORK_NEEDS_POOLS,
            f"replica on DHCP on VLAN network {target.name} at {target.site}: a WNV test network "
            f"({test_network}) needs static pools, and there are none (affects {names(nics)})",
            {"vm_network": target.name, "site": target.site, "test_network": test_network, "nics": list(nics)},
        )
    return None


def pool_exhausted(pool: str, site: str, nics: Sequence[str], purpose: str = "failover") -> Refusal:
    return Refusal(
        POOL_EXHAUSTED,
        f"static IP pool {pool} at {site} has no free address left for {len(nics)} IP "
        f"configuration{'s' if len(nics) != 1 else ''}: {names(nics)}",
        {"pool": pool, "site": site, "nics": list(nics), "purpose": purpose},
    )


def partial_subnet_failover(prefix: str, site: str, left_behind: Sequence[str], moving: Sequence[str]) -> Refusal:
    return Refusal(
        PARTIAL_SUBNET_FAILOVER,
        f"subnet {prefix} keeps its addresses and is not stretched, so it must fail over whole; "
        f"these VMs at {site} have addresses in it but are not in the plan: {names(left_behind)}",
        {"prefix": prefix, "site": site, "vms": list(left_behind), "moving": list(moving)},
    )


def retained_subnet_undeclared(prefix: str, addresses: Sequence[str]) -> Refusal:
    return Refusal(
        RETAINED_SUBNET_UNDECLARED,
        f"addresses retained in {prefix} ({names(addresses)}) lie in no subnet declared under "
        f"'subnets': declare {prefix} with its routes at both sites (or stretched: true) so the "
        f"whole subnet can move",
        {"prefix": prefix, "addresses": list(addresses)},
    )


def invalid_dns_name(vm: str, why: str) -> Refusal:
    return Refusal(
        INVALID_DNS_NAME,
        f"VM {vm} gets no valid DNS name: {why}; give it one under dns.hostnames",
        {"vm": vm},
    )


def is_isolated(network: VmNetwork) -> bool:
    return network.isolation in (Isolation.VLAN, Isolation.WNV)


# ------------------------------------------------------------------ config vs inventory


class ConfigIssue(NamedTuple):
    """A config value that does not match the sites. ``path`` is a dotted key path such as
    ``network_mappings[0].target.vm_network``."""

    path: str
    message: str


def check_config_against_inventory(config: AgentConfig, inventory: Inventory) -> list[ConfigIssue]:
    """Config references that the inventory does not hold: mapping source/target networks,
    ``existing`` test networks (and their isolation), recovery-plan VMs (and their replication).

    Routers are not checked: the inventory's routes name only routers that hold routes now.
    """
    issues: list[ConfigIssue] = []
    # Networks and VMs are matched as VMM matches them: case-insensitively.
    networks = Names((f"{n.site}/{n.name}", n) for n in inventory.vm_networks)

    def known_at(site: str) -> list[str]:
        return [n.name for n in inventory.vm_networks if n.site == site]

    nearest_vm = Nearest(v.name for v in inventory.vms)

    for i, m in enumerate(config.network_mappings):
        for end in ("source", "target"):
            ref = getattr(m, end)
            if f"{ref.site}/{ref.vm_network}" not in networks:
                issues.append(ConfigIssue(
                    f"network_mappings[{i}].{end}.vm_network",
                    f"VM network {ref.vm_network!r} does not exist at site {ref.site}"
                    f"{did_you_mean(ref.vm_network, known_at(ref.site))}",
                ))
        test = m.test_network
        if test.mode == "existing" and test.vm_network:
            net = networks.get(f"{m.target.site}/{test.vm_network}")
            path = f"network_mappings[{i}].test_network.vm_network"
            if net is None:
                issues.append(ConfigIssue(
                    path, f"test VM network {test.vm_network!r} does not exist at site {m.target.site}"
                          f"{did_you_mean(test.vm_network, known_at(m.target.site))}"
                ))
            elif not is_isolated(net):
                issues.append(ConfigIssue(
                    path,
                    f"test VM network {test.vm_network!r} at {m.target.site} is not isolated "
                    f"({net.isolation}); use a VLAN or WNV network",
                ))
    vm_names = Names((v.name, v.name) for v in inventory.vms)
    replicated = Names((r.vm, True) for r in inventory.replications)
    for i, plan in enumerate(config.recovery_plans):
        for j, group in enumerate(plan.groups):
            for k, vm in enumerate(group.vms):
                path = f"recovery_plans[{i}].groups[{j}].vms[{k}]"
                if vm not in vm_names:
                    issues.append(ConfigIssue(
                        path, f"VM {vm!r} is not in the inventory of either site{nearest_vm.hint(vm)}"
                    ))
                elif vm not in replicated:
                    issues.append(ConfigIssue(path, f"VM {vm!r} has no Hyper-V Replica relationship"))
    return issues


__all__ = [
    "REFUSAL_CODES",
    "ConfigIssue",
    "PlanRefused",
    "Refusal",
    "check_config_against_inventory",
    "incompatible_test_network",
    "is_isolated",
]
