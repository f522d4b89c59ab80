"""The simulated Hyper-V hosts of one site (:class:`agent.ports.HyperV`).

The Hyper-V Replica state machine, with the host each action runs on::

    prepare     primary host   Replicating -> PreparedForFailover          (primary VM must be Off)
    failover    replica host   PreparedForFailover | Replicating -> FailedOverWaitingCompletion
    complete    replica host   FailedOverWaitingCompletion -> FailedOver
    reverse     replica host   FailedOver -> Replicating, primary and replica swapped
                               (the old primary, about to become the replica, must be Off)
    cancel      primary host from PreparedForFailover, replica host from
                FailedOverWaitingCompletion -> Replicating (a started replica is turned off and
                loses the addresses its failover settings gave it)
    start_test  replica host   Replicating -> Replicating + test VM "<vm> - Test"
    stop_test   replica host   deletes the test VM (none: changed=False)

An action sent to the other host of the pair is ``invalid_replication_state`` with
``expected_host``. An action whose target state already holds is ``changed=False`` (a second
``reverse`` sent to the host that is now the primary included); a second ``start_test`` while
one runs is ``test_failover_running``. A failover while a test failover runs is
``test_failover_running`` too (stop the test first).

Recovery points: ``failover`` and ``start_test`` take a replica snapshot's name per VM (none:
the latest state) and record it as the relationship's ``failover_point``; a point the replica
does not hold is ``not_found``. A ``failover`` to another point than the pending one is refused
(cancel that failover first). ``complete`` removes the other points, as Complete-VMFailover does.
Only the replica host lists the points.

Power: a replica VM starts only after failover (``invalid_replication_state`` before); when it
starts, each NIC that has failover settings comes up with them as its IP configurations (what
the guest's KVP integration component does). Test VMs keep what VMM's ``connect_nics`` gave them.
Deleting a test VM leaves its grants in VMM: cleanup revokes them explicitly.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agent.domain.errors import (
    InvalidReplicationState,
    InvalidRequest,
    InvalidSetting,
    ReplicationNotEnabled,
    TestFailoverRunning,
    VmRunning,
)
from agent.domain.matching import fold
from agent.domain.model import (
    NicFailoverConfig,
    PowerState,
    Replication,
    ReplicationState,
    VirtualMachine,
    name_test_vm,
)
from agent.drivers.sim.addresses import failover_setting_problem
from agent.drivers.sim.state import State, failover_value, replication_value, setting_dict, vm_value
from agent.errors import NotFoundError
from agent.ports import ItemResult, PowerAction, ReplicaAction

if TYPE_CHECKING:
    from agent.drivers.sim.world import SimWorld

REPLICATING = ReplicationState.REPLICATING.value
PREPARED = ReplicationState.PREPARED_FOR_FAILOVER.value
WAITING = ReplicationState.FAILED_OVER_WAITING_COMPLETION.value
FAILED_OVER = ReplicationState.FAILED_OVER.value
RUNNING, OFF = PowerState.RUNNING.value, PowerState.OFF.value

_ACTIONS = ("prepare", "failover", "start_test", "stop_test", "cancel", "complete", "reverse")



class SimHyperV:
    """The Hyper-V hosts of one site. See the module docstring for the replica rules."""

    def __init__(self, world: SimWorld, site: str) -> None:
        self._world = world
        self.site = site

    # ----------------------------------------------------------------------- common

    def _check_host(self, st: State, host: str) -> None:
        hosts = st["sites"][self.site]["hosts"]
        if host not in hosts:
            raise NotFoundError(
                f"no Hyper-V host {host} at {self.site} (hosts: {', '.join(sorted(hosts)) or 'none'})",
                host=host,
                site=self.site,
            )

    def _vm_on_host(self, st: State, host: str, name: str) -> dict[str, Any]:
        vm = st["vms"][self.site].get(name)
        if vm is None:
            raise NotFoundError(f"no VM {name} at {self.site}", vm=name, host=host)
        if vm["host"] != host:
            raise NotFoundError(f"VM {name} is on host {vm['host']}, not {host}", vm=name, host=host)
        return vm

    def _replicated(self, st: State, name: str, vm: dict[str, Any]) -> dict[str, Any]:
        rep = st["replications"].get(name)
        if rep is None or vm["role"] == "test":
            raise ReplicationNotEnabled(f"VM {name} at {self.site} has no replication", vm=name)
        return rep

    # ------------------------------------------------------------------ failover IPs

    def get_failover_configs(self, host: str, nics: Sequence[tuple[str, str]]) -> list[NicFailoverConfig]:
        """Unknown VMs and NICs are left out, as in ``get_replications``."""

        site = self.site

        def read(st: State) -> tuple[list[NicFailoverConfig], Sequence[str]]:
            self._check_host(st, host)
            out = []
            for vm_name, nic_name in nics:
                vm = st["vms"][site].get(vm_name)
                if vm is None or vm["host"] != host or not any(n["name"] == nic_name for n in vm["nics"]):
                    continue
                settings = st["failover"][site].get(vm_name, {}).get(nic_name, [])
                out.append(failover_value(vm_name, nic_name, host, settings))
            return out, ()

        return self._world._single(
            "hyperv.get_failover_configs",
            host,
            [host, *(v for v, _ in nics)],
            read,
            mutating=False,
            items=len(nics),
            keys=[f"{v}/{n}" for v, n in nics],
        )

    def set_failover_configs(
        self, host: str, configs: Sequence[NicFailoverConfig]
    ) -> list[ItemResult[NicFailoverConfig]]:
        """Also refused (``invalid_setting``): no settings at all (use ``clear_failover_configs``,
        as the cmdlet does), a config naming another host, a prefix length out of range, a
        gateway or DNS server of the other family, one address twice, more addresses of one
        family than the host's ``max_failover_ips_per_family``."""

        site = self.site

        def apply(st: State, cfg: NicFailoverConfig) -> ItemResult[NicFailoverConfig]:
            key = f"{cfg.vm}/{cfg.nic}"
            if cfg.host != host:
                raise InvalidSetting(
                    f"{key}: config names host {cfg.host}, call went to {host}", vm=cfg.vm, nic=cfg.nic
                )
            vm = self._vm_on_host(st, host, cfg.vm)
            if not any(n["name"] == cfg.nic for n in vm["nics"]):
                raise NotFoundError(f"VM {cfg.vm} has no NIC {cfg.nic}", vm=cfg.vm, nic=cfg.nic)
            self._replicated(st, cfg.vm, vm)
            self._check_settings(st, host, cfg)
            wanted = [setting_dict(s) for s in cfg.settings]
            per_vm = st["failover"][site].setdefault(cfg.vm, {})
            if per_vm.get(cfg.nic) == wanted:
                return ItemResult(key, failover_value(cfg.vm, cfg.nic, host, wanted))
            per_vm[cfg.nic] = wanted
            return ItemResult(key, failover_value(cfg.vm, cfg.nic, host, wanted), changed=True)

        return self._world._batch(
            "hyperv.set_failover_configs",
            host,
            configs,
            lambda c: f"{c.vm}/{c.nic}",
            lambda c: (c.vm, f"{c.vm}/{c.nic}"),
            apply,
            precheck=lambda st: self._check_host(st, host),
        )

    def _check_settings(self, st: State, host: str, cfg: NicFailoverConfig) -> None:
        key = f"{cfg.vm}/{cfg.nic}"
        if not cfg.settings:
            raise InvalidSetting(
                f"{key}: no settings given (clear_failover_configs removes them)", vm=cfg.vm, nic=cfg.nic
            )
        seen: set[str] = set()
        per_family: dict[int, int] = {}
        for s in cfg.settings:
            problem = failover_setting_problem(s)
            if problem:
                raise InvalidSetting(f"{key}: {problem}", vm=cfg.vm, nic=cfg.nic, address=s.address)
            if s.address in seen:
                raise InvalidSetting(f"{key}: {s.address} is given twice", vm=cfg.vm, nic=cfg.nic, address=s.address)
            seen.add(s.address)
            family = ipaddress.ip_address(s.address).version
            per_family[family] = per_family.get(family, 0) + 1
        limit = st["sites"][self.site]["hosts"][host]["max_failover_ips_per_family"]
        for version, n in per_family.items():
            if limit is not None and n > limit:
                raise InvalidSetting(
                    f"{key}: {n} IPv{version} failover addresses; host {host} takes {limit} per family",
                    vm=cfg.vm,
                    nic=cfg.nic,
                    host=host,
                )

    def clear_failover_configs(self, host: str, nics: Sequence[tuple[str, str]]) -> list[ItemResult[None]]:
        site = self.site

        def apply(st: State, item: tuple[str, str]) -> ItemResult[None]:
            vm_name, nic_name = item
            key = f"{vm_name}/{nic_name}"
            vm = self._vm_on_host(st, host, vm_name)
            if not any(n["name"] == nic_name for n in vm["nics"]):
                raise NotFoundError(f"VM {vm_name} has no NIC {nic_name}", vm=vm_name, nic=nic_name)
            self._replicated(st, vm_name, vm)
            per_vm = st["failover"][site].get(vm_name, {})
            if nic_name not in per_vm:
                return ItemResult(key)
            del per_vm[nic_name]
            if not per_vm:
                del st["failover"][site][vm_name]
            return ItemResult(key, changed=True)

        return self._world._batch(
            "hyperv.clear_failover_configs",
            host,
            nics,
            lambda n: f"{n[0]}/{n[1]}",
            lambda n: (n[0], f"{n[0]}/{n[1]}"),
            apply,
            precheck=lambda st: self._check_host(st, host),
        )

    # ------------------------------------------------------------------ replication

    def get_replications(self, host: str, vms: Sequence[str]) -> list[Replication]:
        def read(st: State) -> tuple[list[Replication], Sequence[str]]:
            self._check_host(st, host)
            out = []
            for name in vms:
                rep = st["replications"].get(name)
                if rep is not None and host in (rep["primary_host"], rep["replica_host"]):
                    out.append(replication_value(name, rep, host))
            return out, ()

        return self._world._single(
            "hyperv.get_replications", host, [host, *vms], read, mutating=False, items=len(vms), keys=list(vms)
        )

    def replicate(self, host: str, action: ReplicaAction, vms: Sequence[str],
                  points: Mapping[str, str] | None = None) -> list[ItemResult[Replication]]:
        chosen = dict(points or {})

        def precheck(st: State) -> None:
            self._check_host(st, host)
            if action not in _ACTIONS:
                raise InvalidRequest(f"unknown replica action {action!r}", action=action)

        def apply(st: State, name: str) -> ItemResult[Replication]:
            rep = st["replications"].get(name)
            if rep is None:
                vm = self._vm_on_host(st, host, name)
                self._replicated(st, name, vm)
            before = dict(rep)
            if action in ("failover", "start_test"):
                getattr(self, f"_{action}")(st, host, name, rep, chosen.get(name))
            else:
                getattr(self, f"_{action}")(st, host, name, rep)
            return ItemResult(name, replication_value(name, rep, host), changed=rep != before)

        return self._world._batch(
            f"hyperv.replicate.{action}", host, vms, lambda v: v, lambda v: (v,), apply, precheck=precheck
        )

    @staticmethod
    def _expect(host: str, expected: str, role: str, action: str, name: str, rep: dict[str, Any]) -> None:
        if host != expected:
            site = rep["primary_site"] if role == "primary" else rep["replica_site"]
            raise InvalidReplicationState(
                f"{action} of {name} runs on the {role} host {expected} (site {site}), not on {host}",
                vm=name,
                host=host,
                expected_host=expected,
                state=rep["state"],
            )

    @staticmethod
    def _refuse(action: str, name: str, rep: dict[str, Any], why: str = "") -> InvalidReplicationState:
        return InvalidReplicationState(
            f"cannot {action} {name}: replication is {rep['state']}" + (f" ({why})" if why else ""),
            vm=name,
            state=rep["state"],
        )

    def _prepare(self, st: State, host: str, name: str, rep: dict[str, Any]) -> None:
        self._expect(host, rep["primary_host"], "primary", "prepare", name, rep)
        if rep["state"] == PREPARED:
            return
        if rep["state"] != REPLICATING:
            raise self._refuse("prepare", name, rep, "prepare starts from Replicating")
        primary = st["vms"][rep["primary_site"]][name]
        if primary["power"] != OFF:
            raise VmRunning(
                f"prepare of {name} needs the primary VM shut down; it is {primary['power']} on {host}",
                vm=name,
                host=host,
            )
        rep["state"] = PREPARED

    def _failover(self, st: State, host: str, name: str, rep: dict[str, Any], point: str | None) -> None:
        self._expect(host, rep["replica_host"], "replica", "failover", name, rep)
        if rep["state"] == WAITING:
            if rep.get("failover_point") != _point(name, rep, point):
                raise self._refuse("fail over", name, rep, f"it is failed over to {_said(rep.get('failover_point'))}, "
                                   f"not {_said(point)}: cancel that failover first to choose another point")
            return
        if rep["state"] not in (PREPARED, REPLICATING):
            raise self._refuse("failover", name, rep, "already failed over and completed")
        if rep["test_vm"] is not None:
            raise TestFailoverRunning(
                f"test failover of {name} is running ({rep['test_vm']}); stop it before failing over",
                vm=name,
                test_vm=rep["test_vm"],
            )
        rep["failover_point"] = _point(name, rep, point)
        rep["state"] = WAITING

    def _complete(self, st: State, host: str, name: str, rep: dict[str, Any]) -> None:
        self._expect(host, rep["replica_host"], "replica", "complete", name, rep)
        if rep["state"] == FAILED_OVER:
            return
        if rep["state"] != WAITING:
            raise self._refuse("complete", name, rep, "complete follows failover")
        st["vms"][rep["replica_site"]][name].pop("saved_ip", None)  # committed: nothing to roll back to
        rep["recovery_points"] = []  # Complete-VMFailover removes all other recovery points
        rep["state"] = FAILED_OVER

    def _reverse(self, st: State, host: str, name: str, rep: dict[str, Any]) -> None:
        if rep["state"] == REPLICATING and rep["primary_host"] == host:
            return  # already reversed: this host is the primary now
        self._expect(host, rep["replica_host"], "replica", "reverse", name, rep)
        if rep["state"] != FAILED_OVER:
            raise self._refuse("reverse", name, rep, "reverse follows complete")
        old_primary = st["vms"][rep["primary_site"]][name]
        if old_primary["power"] != OFF:
            raise VmRunning(
                f"reverse of {name}: the old primary on {rep['primary_host']} is {old_primary['power']}; "
                "shut it down before it becomes the replica",
                vm=name,
                host=rep["primary_host"],
            )
        old_replica = st["vms"][rep["replica_site"]][name]
        old_primary["role"], old_replica["role"] = "replica", "primary"
        old_replica.pop("saved_ip", None)
        rep.update(
            primary_site=rep["replica_site"],
            primary_host=rep["replica_host"],
            replica_site=rep["primary_site"],
            replica_host=rep["primary_host"],
            state=REPLICATING,
            recovery_points=[],  # the new replica has none yet
            failover_point=None,
        )

    def _cancel(self, st: State, host: str, name: str, rep: dict[str, Any]) -> None:
        if rep["state"] == REPLICATING:
            if host not in (rep["primary_host"], rep["replica_host"]):
                self._expect(host, rep["replica_host"], "replica", "cancel", name, rep)
            return
        if rep["state"] == PREPARED:
            self._expect(host, rep["primary_host"], "primary", "cancel", name, rep)
        elif rep["state"] == WAITING:
            self._expect(host, rep["replica_host"], "replica", "cancel", name, rep)
            replica = st["vms"][rep["replica_site"]][name]
            replica["power"] = OFF
            _restore_ip(replica)
        else:
            raise self._refuse("cancel", name, rep, "the failover is completed")
        rep["failover_point"] = None
        rep["state"] = REPLICATING

    def _start_test(self, st: State, host: str, name: str, rep: dict[str, Any], point: str | None) -> None:
        self._expect(host, rep["replica_host"], "replica", "start_test", name, rep)
        if rep["test_vm"] is not None:
            raise TestFailoverRunning(
                f"a test failover of {name} is already running ({rep['test_vm']})", vm=name, test_vm=rep["test_vm"]
            )
        if rep["state"] != REPLICATING:
            raise self._refuse("start a test failover of", name, rep, "test failover needs Replicating")
        site_vms = st["vms"][rep["replica_site"]]
        test_name = name_test_vm(name)
        if test_name in site_vms:
            raise InvalidReplicationState(
                f"cannot start a test failover of {name}: a VM named {test_name!r} already exists", vm=name
            )
        replica = site_vms[name]
        rep["failover_point"] = _point(name, rep, point)
        # Hyper-V creates the test VM from the recovery point, not connected to any network.
        site_vms[test_name] = {
            "host": rep["replica_host"],
            "role": "test",
            "power": OFF,
            "nics": [
                {"id": str(uuid.uuid4()), "name": n["name"], "vm_network": None, "vm_subnet": None, "ip": []}
                for n in replica["nics"]
            ],
        }
        rep["test_vm"] = test_name

    def _stop_test(self, st: State, host: str, name: str, rep: dict[str, Any]) -> None:
        self._expect(host, rep["replica_host"], "replica", "stop_test", name, rep)
        if rep["test_vm"] is None:
            return
        st["vms"][rep["replica_site"]].pop(rep["test_vm"], None)
        rep["test_vm"] = None
        rep["failover_point"] = None

    # ------------------------------------------------------------------------ power

    def set_power(self, host: str, action: PowerAction, vms: Sequence[str]) -> list[ItemResult[VirtualMachine]]:
        site = self.site
        def precheck(st: State) -> None:
            self._check_host(st, host)
            if action not in ("start", "stop"):
                raise InvalidRequest(f"unknown power action {action!r}", action=action)

        def apply(st: State, name: str) -> ItemResult[VirtualMachine]:
            vm = self._vm_on_host(st, host, name)
            target = RUNNING if action == "start" else OFF
            if vm["power"] == target:
                return ItemResult(name, vm_value(site, name, vm))
            if action == "start" and vm["role"] == "replica":
                rep = st["replications"][name]
                if rep["state"] not in (WAITING, FAILED_OVER):
                    raise InvalidReplicationState(
                        f"replica VM {name} cannot start while replication is {rep['state']}; fail over first",
                        vm=name,
                        state=rep["state"],
                    )
                _apply_failover_settings(vm, st["failover"][site].get(name, {}))
            vm["power"] = target
            return ItemResult(name, vm_value(site, name, vm), changed=True)

        return self._world._batch(
            f"hyperv.set_power.{action}", host, vms, lambda v: v, lambda v: (v,), apply, precheck=precheck
        )

    # ------------------------------------------------------------------------ probe

    def probe(self, host: str) -> str:
        """``not_found`` for a host the site does not have; fault rules match ``hyperv.probe``
        and the host."""

        site = self.site

        def read(st: State) -> tuple[str, Sequence[str]]:
            self._check_host(st, host)
            held = sum(1 for vm in st["vms"][site].values() if vm["host"] == host)
            return f"simulated Hyper-V host {host} at {site} answers ({held} VMs)", ()

        return self._world._single("hyperv.probe", host, [host], read, mutating=False)


def _point(name: str, rep: dict[str, Any], point: str | None) -> str | None:
    """The recovery point ``point`` names among the replica's (its spelling); None: the latest."""
    if point is None:
        return None
    for p in rep.get("recovery_points", []):
        if fold(p["name"]) == fold(point):
            return str(p["name"])
    have = ", ".join(p["name"] for p in rep.get("recovery_points", [])) or "none"
    raise NotFoundError(f"VM {name} has no recovery point {point!r} on {rep['replica_host']} (it has: {have})",
                        vm=name, recovery_point=point)


def _said(point: str | None) -> str:
    return "its latest state" if point is None else f"recovery point {point!r}"


def _apply_failover_settings(vm: dict[str, Any], settings: dict[str, list[dict[str, Any]]]) -> None:
    saved = vm.setdefault("saved_ip", {})
    for nic in vm["nics"]:
        wanted = settings.get(nic["name"])
        if not wanted:
            continue
        saved.setdefault(nic["name"], nic["ip"])
        nic["ip"] = [["static", s["address"], s["prefix_length"]] for s in wanted]
    if not saved:
        del vm["saved_ip"]


def _restore_ip(vm: dict[str, Any]) -> None:
    for nic in vm["nics"]:
        old = vm.get("saved_ip", {}).get(nic["name"])
        if old is not None:
            nic["ip"] = old
    vm.pop("saved_ip", None)
