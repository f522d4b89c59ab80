"""The Hyper-V hosts of one site through PowerShell (:class:`agent.ports.HyperV`).

Each port method is one script run per call (``powershell/hyperv/``), with the host as
``-ComputerName``: at the host's own endpoint where the config lists one, else at the site's VMM
server (a second hop: CredSSP or Kerberos delegation, see the reference notes). The scripts name
replica servers as Hyper-V reports them; :meth:`PsHyperV._site_of` places them in the config's
sites. The behaviour each method keeps is the simulated driver's (``agent/drivers/sim/hyperv.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from agent.config import Endpoint
from agent.domain.errors import InvalidRequest
from agent.domain.model import (
    FailoverIpSetting,
    NicFailoverConfig,
    PowerState,
    RecoveryPoint,
    Replication,
    ReplicationState,
    VirtualMachine,
)
from agent.drivers.ps import PsDriver, item_error
from agent.drivers.remoting import Remote, RemoteItem, RemoteScriptError
from agent.errors import NotFoundError
from agent.ports import ItemResult, PowerAction, ReplicaAction

__all__ = ["PsHyperV"]

_ACTIONS = ("prepare", "failover", "start_test", "stop_test", "cancel", "complete", "reverse")

# FullyQualifiedErrorId prefixes of Hyper-V's own errors, for items the scripts did not classify.
_FAILOVER_ERRORS = {"ObjectNotFound": "not_found", "InvalidParameter": "invalid_setting",
                    "InvalidArgument": "invalid_setting"}
_REPLICA_ERRORS = {"ObjectNotFound": "not_found", "InvalidOperation": "invalid_replication_state",
                   "InvalidState": "invalid_replication_state"}
_POWER_ERRORS = {"ObjectNotFound": "not_found", "InvalidState": "invalid_replication_state"}
_PROBE_ERRORS = {"ObjectNotFound": "not_found", "VirtualizationException": "not_found"}


class PsHyperV:
    """The Hyper-V hosts of ``site``. ``hosts``: the endpoint of each host the config lists;
    ``via``: where the hosts of a site without listed hosts are reached (its VMM server).
    ``sites_by_host``: every listed host of the config and its site, to place replica partners."""

    def __init__(self, remote: Remote, site: str, hosts: Mapping[str, Endpoint], *, via: Endpoint | None = None,
                 sites_by_host: Mapping[str, str] | None = None, sites: Sequence[str] = (),
                 timeout_s: float | None = None) -> None:
        if not hosts and via is None:
            raise ValueError(f"site {site}: no Hyper-V host endpoints and no VMM endpoint to reach them through")
        self.site = site
        self._hosts = dict(hosts)
        self._via = via
        self._sites_by_host = dict(sites_by_host or {})
        self._sites = tuple(sites)
        first = via if via is not None else next(iter(self._hosts.values()))
        self._ps = PsDriver(remote, first, timeout_s=timeout_s)

    # ----------------------------------------------------------------------- common

    def _endpoint(self, host: str) -> Endpoint:
        if host in self._hosts:
            return self._hosts[host]
        if self._via is None:
            raise NotFoundError(f"no Hyper-V host {host} at {self.site} (hosts: {', '.join(sorted(self._hosts))})",
                                host=host, site=self.site)
        return self._via

    def _site_of(self, server: str, asked: str) -> str:
        """The config site of a server name as Hyper-V reports it (short or fully qualified);
        ``asked`` is the host of this site that answered."""
        short = server.split(".", 1)[0]
        for name in (server, short):
            if name in self._sites_by_host:
                return self._sites_by_host[name]
        if short in (asked, asked.split(".", 1)[0]):
            return self.site
        others = [s for s in self._sites if s != self.site]
        if len(others) == 1:  # a partner the config lists no host for: the pair's other site
            return others[0]
        raise RemoteScriptError(f"replica server {server} is on no site of the config", server=server)

    def _host_name(self, server: str) -> str:
        short = server.split(".", 1)[0]
        return server if server in self._sites_by_host or short not in self._sites_by_host else short

    def _replication(self, asked: str, raw: Mapping[str, Any]) -> Replication:
        primary, replica = self._host_name(raw["primary_host"]), self._host_name(raw["replica_host"])
        points = raw.get("recovery_points") or []
        if isinstance(points, dict):  # ConvertTo-Json unwraps a one-element array
            points = [points]
        return Replication(vm=raw["vm"], primary_site=self._site_of(primary, asked), primary_host=primary,
                           replica_site=self._site_of(replica, asked), replica_host=replica,
                           state=ReplicationState(raw["state"]), test_vm=raw.get("test_vm"),
                           recovery_points=tuple(RecoveryPoint.model_validate(p) for p in points),
                           failover_point=raw.get("recovery_point"))

    @staticmethod
    def _config(raw: Mapping[str, Any]) -> NicFailoverConfig:
        settings = raw.get("settings") or []
        if isinstance(settings, dict):  # ConvertTo-Json unwraps a one-element array
            settings = [settings]
        return NicFailoverConfig(vm=raw["vm"], nic=raw["nic"], host=raw["host"],
                                 settings=tuple(FailoverIpSetting.model_validate(s) for s in settings))

    def _vm(self, raw: Mapping[str, Any]) -> VirtualMachine:
        return VirtualMachine(name=raw["name"], site=self.site, host=raw["host"], role=raw["role"],
                              power_state=PowerState(raw["power_state"]))

    @staticmethod
    def _results(items: list[RemoteItem], errors: Mapping[str, str], value: Any) -> list[ItemResult[Any]]:
        return [ItemResult(it.key, error=item_error(it, errors)) if it.error_id is not None
                else ItemResult(it.key, None if it.after is None else value(it.after), changed=it.changed)
                for it in items]

    @staticmethod
    def _nics_json(nics: Sequence[tuple[str, str]]) -> str:
        return json.dumps([{"vm": vm, "nic": nic} for vm, nic in nics])

    # ------------------------------------------------------------------ failover IPs

    def get_failover_configs(self, host: str, nics: Sequence[tuple[str, str]]) -> list[NicFailoverConfig]:
        items = self._ps.call_at(self._endpoint(host), "hyperv/Get-AgentFailoverConfig",
                                 ComputerName=host, NicsJson=self._nics_json(nics))
        failed = [it for it in items if it.error_id is not None]
        if failed:
            raise item_error(failed[0], _FAILOVER_ERRORS)
        return [self._config(it.after) for it in items]

    def set_failover_configs(self, host: str, configs: Sequence[NicFailoverConfig]
                             ) -> list[ItemResult[NicFailoverConfig]]:
        batch = json.dumps([c.model_dump(mode="json") for c in configs])
        items = self._ps.call_at(self._endpoint(host), "hyperv/Set-AgentFailoverConfig",
                                 ComputerName=host, ConfigsJson=batch)
        return self._results(items, _FAILOVER_ERRORS, self._config)

    def clear_failover_configs(self, host: str, nics: Sequence[tuple[str, str]]) -> list[ItemResult[None]]:
        items = self._ps.call_at(self._endpoint(host), "hyperv/Clear-AgentFailoverConfig",
                                 ComputerName=host, NicsJson=self._nics_json(nics))
        return [ItemResult(it.key, error=item_error(it, _FAILOVER_ERRORS)) if it.error_id is not None
                else ItemResult(it.key, changed=it.changed) for it in items]

    # ------------------------------------------------------------------ replication

    def get_replications(self, host: str, vms: Sequence[str]) -> list[Replication]:
        items = self._ps.call_at(self._endpoint(host), "hyperv/Get-AgentReplication",
                                 ComputerName=host, VmName=list(vms))
        failed = [it for it in items if it.error_id is not None]
        if failed:
            raise item_error(failed[0], _REPLICA_ERRORS)
        return [self._replication(host, it.after) for it in items]

    def replicate(self, host: str, action: ReplicaAction, vms: Sequence[str],
                  points: Mapping[str, str] | None = None) -> list[ItemResult[Replication]]:
        if action not in _ACTIONS:  # refused here: the script's ValidateSet would fail the whole call
            raise InvalidRequest(f"unknown replica action {action!r}", action=action)
        # Only a failover or test failover comes up from a named point.
        chosen = dict(points or {}) if action in ("failover", "start_test") else {}
        items = self._ps.call_at(self._endpoint(host), "hyperv/Invoke-AgentReplicaAction",
                                 ComputerName=host, Action=action, VmName=list(vms), PointsJson=json.dumps(chosen))
        return self._results(items, _REPLICA_ERRORS, lambda raw: self._replication(host, raw))

    # ------------------------------------------------------------------------ power

    def set_power(self, host: str, action: PowerAction, vms: Sequence[str]) -> list[ItemResult[VirtualMachine]]:
        if action not in ("start", "stop"):
            raise InvalidRequest(f"unknown power action {action!r}", action=action)
        items = self._ps.call_at(self._endpoint(host), "hyperv/Set-AgentVMPower",
                                 ComputerName=host, Action=action, VmName=list(vms))
        return self._results(items, _POWER_ERRORS, self._vm)

    # ------------------------------------------------------------------------ probe

    def probe(self, host: str) -> str:
        items = self._ps.call_at(self._endpoint(host), "hyperv/Get-AgentHostProbe", ComputerName=host)
        if not items:
            raise RemoteScriptError(f"Hyper-V host {host} answered the probe with nothing", host=host)
        if items[0].error_id is not None:
            raise item_error(items[0], _PROBE_ERRORS)
        return str(items[0].after["answer"])
