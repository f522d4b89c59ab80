"""The config's cross-references (:class:`agent.config.AgentConfig` checks them when it is
built), kept apart so that the models stay readable: every name the file refers to exists, nothing
is declared twice, and what must differ does. Each problem starts with the dotted key path it is
about, so the loader can locate it in the file."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from agent.configrules import duplicate_names
from agent.dns.hostnames import host_name_problems
from agent.domain.matching import fold

if TYPE_CHECKING:
    from agent.config import AgentConfig


def cross_reference_problems(cfg: AgentConfig) -> list[str]:
    site_names = [s.name for s in cfg.sites]
    servers = {d.name for d in cfg.dns.servers}
    return [
        *_protection_pair(cfg, site_names),
        *duplicate_names(cfg),
        *(f"sites[{i}].dns_servers[{j}]: no dns.servers entry named {name!r}"
          for i, site in enumerate(cfg.sites) for j, name in enumerate(site.dns_servers) if name not in servers),
        *_network_mappings(cfg, site_names),
        *_subnets(cfg, site_names),
        *_routers(cfg),
        *(f"dns.zones[{i}].server: no dns.servers entry named {z.server!r}"
          for i, z in enumerate(cfg.dns.zones) if z.server not in servers),
        *_recovery_plans(cfg),
        *_address_overrides(cfg),
        *host_name_problems(cfg),
        *_simulator(cfg),
    ]


def _protection_pair(cfg: AgentConfig, site_names: list[str]) -> list[str]:
    problems = []
    if len(set(site_names)) != len(site_names):
        problems.append(f"sites: the two sites need different names (got {site_names})")
    if cfg.agent.site not in site_names:
        problems.append(f"agent.site: {cfg.agent.site!r} is not one of the sites {site_names}")
    return problems


def _network_mappings(cfg: AgentConfig, site_names: list[str]) -> list[str]:
    problems = []
    for i, m in enumerate(cfg.network_mappings):
        for end in ("source", "target"):
            ref = getattr(m, end)
            if ref.site not in site_names:
                problems.append(f"network_mappings[{i}].{end}.site: unknown site {ref.site!r}")
        if m.source.site == m.target.site:
            problems.append(f"network_mappings[{i}]: source and target are at the same site")
    seen_sources: dict[tuple[str, str], int] = {}
    for i, m in enumerate(cfg.network_mappings):
        key = (m.source.site, m.source.vm_network)
        if key in seen_sources:
            problems.append(
                f"network_mappings[{i}].source: {m.source.vm_network!r} at {m.source.site} "
                f"is already mapped by network_mappings[{seen_sources[key]}]"
            )
        seen_sources.setdefault(key, i)
    return problems


def _subnets(cfg: AgentConfig, site_names: list[str]) -> list[str]:
    problems = []
    all_sites = set(site_names) | {t.name for t in cfg.third_sites}
    routers = {r.name for s in cfg.sites for r in s.routers} | {
        r.name for t in cfg.third_sites for r in t.routers
    }
    prefixes: list[tuple[int, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    for i, sn in enumerate(cfg.subnets):
        net = ipaddress.ip_network(sn.prefix)
        for k, other in prefixes:
            if net.overlaps(other):
                problems.append(f"subnets[{i}].prefix: {net} overlaps subnets[{k}].prefix {other}")
        prefixes.append((i, net))
        for announced_at, anns in sn.announcements.items():
            if announced_at not in site_names:
                problems.append(f"subnets[{i}].announcements.{announced_at}: unknown site")
            for j, a in enumerate(anns):
                if a.router not in routers:
                    problems.append(
                        f"subnets[{i}].announcements.{announced_at}[{j}].router: unknown router {a.router!r}")
        if not sn.stretched:
            missing = [s for s in site_names if not sn.announcements.get(s)]
            if missing:
                problems.append(
                    f"subnets[{i}].announcements: a subnet that fails over whole needs routes "
                    f"at both sites; none for {', '.join(missing)}"
                )
        for j, t in enumerate(sn.third_site_routes):
            if t.router not in routers:
                problems.append(f"subnets[{i}].third_site_routes[{j}].router: unknown router {t.router!r}")
            for hop_site in t.next_hop_by_site:
                if hop_site not in all_sites:
                    problems.append(
                        f"subnets[{i}].third_site_routes[{j}].next_hop_by_site.{hop_site}: unknown site")
    return problems


ROUTER_SCRIPT_PARAMETERS = ("Action", "Prefix", "NextHop", "Interface", "Metric", "Router")
"""What the agent binds on every run of a ``script`` router's script (README, "Routers")."""


def _routers(cfg: AgentConfig) -> list[str]:
    """What each router kind takes: a script only for kind ``script``; on a ``bgp`` router an
    announcement is the prefix alone (the speaker announces it as its own network, so there is
    no next hop, interface or metric to give) and no third-site route (BGP peers learn the moved
    prefix themselves); on the others a route has exactly one of next hop or interface."""
    problems: list[str] = []
    kinds: dict[str, str] = {}
    taken = {fold(p) for p in ROUTER_SCRIPT_PARAMETERS}
    for where, routers in [*((f"sites[{i}]", s.routers) for i, s in enumerate(cfg.sites)),
                           *((f"third_sites[{i}]", t.routers) for i, t in enumerate(cfg.third_sites))]:
        for j, r in enumerate(routers):
            kinds[r.name] = r.kind
            if (r.kind == "script") != (r.script is not None):
                problems.append(f"{where}.routers[{j}].script: a router of kind script needs script "
                                f"(path, parameters, timeout_s)" if r.kind == "script"
                                else f"{where}.routers[{j}].script: only a router of kind script takes a script")
            for name in sorted(k for k in (r.script.parameters if r.script else {}) if fold(k) in taken):
                problems.append(f"{where}.routers[{j}].script.parameters.{name}: bound by the agent on every "
                                f"run ({', '.join(ROUTER_SCRIPT_PARAMETERS)}), not a config parameter")
    for i, sn in enumerate(cfg.subnets):
        for site, anns in sn.announcements.items():
            for j, a in enumerate(anns):
                at = f"subnets[{i}].announcements.{site}[{j}]"
                if kinds.get(a.router) == "bgp":
                    given = [k for k in ("next_hop", "interface", "metric") if k in a.model_fields_set]
                    if given:
                        problems.append(f"{at}.{given[0]}: {a.router} is a bgp router: it announces {sn.prefix} "
                                        f"as its own network (Add-BgpCustomRoute -Network), with no {given[0]} to "
                                        "give; write the router only")
                elif a.router in kinds and (a.next_hop is None) == (a.interface is None):
                    problems.append(f"{at}: give exactly one of next_hop or interface")
        for j, t in enumerate(sn.third_site_routes):
            if kinds.get(t.router) == "bgp":
                problems.append(f"subnets[{i}].third_site_routes[{j}].router: {t.router} is a bgp router: its "
                                "peers learn the moved prefix by BGP, there is no next hop to repoint")
    return problems


def _recovery_plans(cfg: AgentConfig) -> list[str]:
    problems = []
    hosts = {h.name for s in cfg.sites for h in s.hyperv_hosts}
    plan_names: set[str] = set()
    for i, p in enumerate(cfg.recovery_plans):
        # Folded: plans are named on the command line case-insensitively, VMs as VMM names them.
        if fold(p.name) in plan_names:
            problems.append(f"recovery_plans[{i}].name: duplicate plan name {p.name!r}")
        plan_names.add(fold(p.name))
        seen_vms: dict[str, str] = {}
        for j, g in enumerate(p.groups):
            for k, vm in enumerate(g.vms):
                if fold(vm) in seen_vms:
                    problems.append(
                        f"recovery_plans[{i}].groups[{j}].vms[{k}]: {vm!r} is already in group "
                        f"{seen_vms[fold(vm)]!r}"
                    )
                seen_vms.setdefault(fold(vm), g.name)
            for when, steps in (("before", g.before), ("after", g.after)):
                for k, step in enumerate(steps):
                    if step.script and step.script.host not in hosts:
                        problems.append(
                            f"recovery_plans[{i}].groups[{j}].{when}[{k}].script.host: "
                            f"unknown Hyper-V host {step.script.host!r}"
                        )
    return problems


def _address_overrides(cfg: AgentConfig) -> list[str]:
    problems = []
    seen_overrides: dict[tuple[str, str, int], int] = {}
    for i, o in enumerate(cfg.address_overrides):
        if o.key in seen_overrides:
            problems.append(f"address_overrides[{i}]: VM {o.vm} NIC {o.nic} IP configuration {o.ip_configuration}"
                            f" is given twice (also address_overrides[{seen_overrides[o.key]}])")
        seen_overrides.setdefault(o.key, i)
    return problems


def _simulator(cfg: AgentConfig) -> list[str]:
    uses_sim = any(s.vmm.transport == "sim" for s in cfg.sites) or any(
        d.kind == "sim" for d in cfg.dns.servers
    )
    if uses_sim and cfg.simulator is None:
        return ["simulator: sites use transport 'sim' but no simulator inventory is configured"]
    return []
