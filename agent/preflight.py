"""Preflight: before an operation changes anything, prove that everything it will use is there.

A config can be valid and its sites' inventory complete while the operation still cannot finish:
the TSIG secret's variable is unset or holds the wrong key, a Hyper-V host or a router does not
answer. Planning reads are unsigned and the secrets are revealed only when a step needs them, so
without this the failure comes in the middle of the run -- with the source VMs already shut down
and group 0 failed over. :func:`preflight` checks, before anything is recorded or changed:

* every secret the operation will use resolves (``env:`` variable set, ``file:`` readable) and is
  not empty;
* every endpoint it will touch answers a read-only call (each port's ``probe``): each site's VMM,
  each Hyper-V host, each router, each host a recovery-plan script runs on, and each DNS server
  for each of its zones -- with a query signed by the key its updates use, so a wrong key is
  refused (BADSIG / BADKEY) now rather than after the first failover.

The probes run concurrently (at most ``workers`` at a time) under one deadline, so a preflight of
many endpoints takes about as long as its slowest endpoint, and one that does not answer costs
the deadline, not a hang. Every failure is reported, not only the first, each with the config key
it comes from.

Which endpoints depend on the operation (``kind``): a test failover and its cleanup write only
the test DNS servers, the others only the production ones; cleanup, commit and reverse touch no
router. An *unplanned* failover is run because the other site is dark: what fails there is
reported as a warning and does not refuse the run (the agent runs at the site that is up, so the
dark site is the other one). A cleanup or a commit works on one site only, the one its test
failover or failover went to (``site``): the other is not checked, so a failover can be committed
while its old primary is still dark. ``kind=None`` (``validate --deep``) checks everything the
config names.

Only ports and the config are used here; the CLI (and later the API) locate and print the result.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

from agent.config import AgentConfig, DnsServer, Router, SecretRef, SecretUnavailable
from agent.errors import AgentError, Category, TimeoutError_
from agent.ports import Ports

CheckKind = Literal["secret", "vmm", "hyperv", "router", "script_host", "dns"]

DEADLINE_S = 20.0
"""How long a whole preflight may take: longer than a DNS server's default timeout (5 s), far
shorter than an operator waits before suspecting a hang."""

TEST_KINDS = frozenset({"test_failover", "cleanup_test"})
"""Operations that write only the test DNS servers."""
WITHOUT_ROUTES = frozenset({"cleanup_test", "commit", "reverse"})
"""Operations that neither read nor change a route."""
WITHOUT_DNS = frozenset({"reverse"})
ONE_SITE = frozenset({"cleanup_test", "commit"})
"""Operations that work on one site only: the one the operation they follow went to."""


@dataclass(frozen=True, slots=True)
class Finding:
    """What one check found."""

    kind: CheckKind
    target: str
    """What was checked, for the operator: ``DNS server dns-contoso, zone corp.example.``."""
    key: str
    """The config key it comes from (for a failure: where to fix it)."""
    ok: bool
    detail: str
    """What the endpoint answered, or what went wrong (never a secret)."""
    code: str | None = None
    category: Category | None = None
    required: bool = True
    """False for an endpoint of the dark site in an unplanned failover: a warning only."""
    site: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "ok": self.ok, "detail": self.detail, "code": self.code,
                "key": self.key, "site": self.site, "required": self.required, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True, slots=True)
class PreflightReport:
    findings: tuple[Finding, ...]
    seconds: float

    @property
    def problems(self) -> list[Finding]:
        """The failures that refuse the operation."""
        return [f for f in self.findings if not f.ok and f.required]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok and not f.required]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def only_unreachable(self) -> bool:
        """Every problem may go away by itself (timeouts, unreachable endpoints): try again
        later. Otherwise something in the config or a secret is wrong."""
        return all(f.category == "transient" for f in self.problems)


@dataclass(frozen=True, slots=True)
class _Check:
    kind: CheckKind
    target: str
    key: str
    call: Callable[[], str]
    site: str | None = None
    key_for: Callable[[AgentError], str] | None = None
    """The config key a failure points at, when it depends on what failed (a DNS server's
    address or its key)."""


def preflight(config: AgentConfig, ports: Ports, *, kind: str | None = None, plan: str | None = None,
              site: str | None = None, deadline_s: float = DEADLINE_S, workers: int | None = None) -> PreflightReport:
    """Check the secrets and endpoints an operation of ``kind`` (an operation kind's value, e.g.
    ``"planned_failover"``; ``None``: everything the config names) on recovery plan ``plan``
    will use; ``site``: the one site a cleanup or commit works on (``None``: both). Changes
    nothing; raises nothing for what it finds (a driver's bug propagates)."""

    started = time.monotonic()
    dark = config.peer_site.name if kind == "unplanned_failover" else None
    only = site if kind in ONE_SITE else None
    secrets, servers = _secret_checks(config, kind, only)
    width = workers or config.policies.concurrency.global_limit
    found = _run_all(secrets, width, started, deadline_s)
    unusable = {f.key for f in found if not f.ok}
    # A DNS server whose secret does not resolve is not asked: its one failure is the secret's.
    usable = [s for s, key in servers if key not in unusable]
    found += _run_all(_endpoint_checks(config, ports, kind, plan, usable, only), width, started, deadline_s)
    found = [replace(f, detail=f"{f.detail} (the site is dark: an unplanned failover goes on without it)",
                     required=False) if not f.ok and dark is not None and f.site == dark else f for f in found]
    return PreflightReport(tuple(found), time.monotonic() - started)


# ------------------------------------------------------------------------------ what to check


def _dns_in_scope(config: AgentConfig, kind: str | None) -> list[tuple[int, DnsServer]]:
    if kind in WITHOUT_DNS:
        return []
    purpose = None if kind is None else "test" if kind in TEST_KINDS else "production"
    zoned = {z.server for z in config.dns.zones}
    return [(i, s) for i, s in enumerate(config.dns.servers)
            if s.name in zoned and (purpose is None or s.purpose == purpose)]


def _routers(config: AgentConfig) -> list[tuple[str, str, Router]]:
    """(config key, site, router) of every router, the third sites' included."""
    found = [(f"sites[{i}].routers[{j}]", site.name, r) for i, site in enumerate(config.sites)
             for j, r in enumerate(site.routers)]
    found += [(f"third_sites[{i}].routers[{j}]", third.name, r) for i, third in enumerate(config.third_sites)
              for j, r in enumerate(third.routers)]
    return found


def _routers_in_scope(config: AgentConfig, kind: str | None) -> list[tuple[str, str, Router]]:
    if kind is None:
        return _routers(config)
    # Routes are read (and moved) only for subnets that fail over whole.
    return [] if kind in WITHOUT_ROUTES or not config.subnets else _routers(config)


def _secret_checks(config: AgentConfig, kind: str | None,
                   only: str | None = None) -> tuple[list[_Check], list[tuple[DnsServer, str]]]:
    """The checks of every secret in scope, and each DNS server in scope with the key of its
    TSIG secret (``""`` without one)."""

    refs: list[tuple[str, str, SecretRef]] = []  # (config key, whose secret, reference)

    def endpoint(key: str, whose: str, credential: SecretRef | None) -> None:
        if credential is not None:
            refs.append((f"{key}.credential", f"the credential of {whose}", credential))

    for i, site in enumerate(config.sites):
        if only is not None and site.name != only:
            continue
        endpoint(f"sites[{i}].vmm", f"the VMM server of {site.name}", site.vmm.credential)
        for j, host in enumerate(site.hyperv_hosts):
            endpoint(f"sites[{i}].hyperv_hosts[{j}].endpoint", f"Hyper-V host {host.name}", host.endpoint.credential)
    for key, _site, router in _routers_in_scope(config, kind):
        endpoint(f"{key}.endpoint", f"router {router.name}", router.endpoint.credential)
    servers: list[tuple[DnsServer, str]] = []
    for i, server in _dns_in_scope(config, kind):
        tsig_key = ""
        if server.tsig is not None:
            tsig_key = f"dns.servers[{i}].tsig.secret"
            whose = f"the TSIG key {server.tsig.name!r} of DNS server {server.name}"
            refs.append((tsig_key, whose, server.tsig.secret))
        if server.endpoint is not None:
            endpoint(f"dns.servers[{i}].endpoint", f"DNS server {server.name}", server.endpoint.credential)
        servers.append((server, tsig_key))
    return [_Check("secret", f"{whose} ({ref.ref})", key, _resolver(ref)) for key, whose, ref in refs], servers


def _resolver(ref: SecretRef) -> Callable[[], str]:
    def resolve() -> str:
        if not ref.reveal().strip():  # the value goes no further than this test
            scheme, _, where = ref.ref.partition(":")
            what = f"environment variable {where}" if scheme == "env" else f"secret file {where}"
            raise SecretUnavailable(f"{what} is empty", secret=ref.ref)
        return f"{ref.ref} resolves"

    return resolve


def _endpoint_checks(config: AgentConfig, ports: Ports, kind: str | None, plan: str | None,
                     servers: Sequence[DnsServer], only: str | None) -> list[_Check]:
    checks: list[_Check] = []
    for i, site in enumerate(config.sites):
        if only is not None and site.name != only:
            continue
        vmm = ports.vmm[site.name]
        checks.append(_Check("vmm", f"VMM server of site {site.name}", f"sites[{i}].vmm", vmm.probe, site.name))
        hyperv = ports.hyperv[site.name]
        for j, host in enumerate(site.hyperv_hosts):
            checks.append(_Check("hyperv", f"Hyper-V host {host.name} of site {site.name}",
                                 f"sites[{i}].hyperv_hosts[{j}]", partial(hyperv.probe, host.name), site.name))
    for key, site_name, router in _routers_in_scope(config, kind):
        checks.append(_Check("router", f"router {router.name} of site {site_name}", key,
                             partial(ports.routes.probe, router.name), site_name))
    site_of_host = {h.name: s.name for s in config.sites for h in s.hyperv_hosts}
    for key, script_host in _script_hosts(config, kind, plan):
        checks.append(_Check("script_host", f"script host {script_host}", key,
                             partial(ports.scripts.probe, script_host), site_of_host.get(script_host)))
    index = {s.name: i for i, s in enumerate(config.dns.servers)}
    only_at = _dns_only_at(config)
    for server in servers:
        i = index[server.name]
        for k, zone in enumerate(config.dns.zones):
            if zone.server == server.name:
                checks.append(_Check("dns", f"DNS server {server.name}, zone {zone.name}", f"dns.zones[{k}]",
                                     partial(ports.dns[server.name].probe, zone.name), only_at.get(server.name),
                                     _dns_key(i, f"dns.zones[{k}]")))
    return checks


def _dns_key(server: int, zone_key: str) -> Callable[[AgentError], str]:
    """Where a DNS failure is fixed: the key (a rejected signature or time), the zone (not served
    there, or its queries refused), or the server entry (address, port, reachability)."""

    def key_for(err: AgentError) -> str:
        if err.code in ("dns_bad_key", "dns_bad_time"):
            return f"dns.servers[{server}].tsig"
        if err.code in ("dns_not_authoritative", "dns_refused"):
            return zone_key
        return f"dns.servers[{server}]"

    return key_for


def _dns_only_at(config: AgentConfig) -> dict[str, str]:
    """DNS servers that only one site lists, by name: they are of that site."""
    sites: dict[str, set[str]] = {}
    for site in config.sites:
        for name in site.dns_servers:
            sites.setdefault(name, set()).add(site.name)
    return {name: next(iter(at)) for name, at in sites.items() if len(at) == 1}


def _script_hosts(config: AgentConfig, kind: str | None, plan: str | None) -> list[tuple[str, str]]:
    """(config key, host) of each host a script of the plan runs on (of every plan when checking
    everything); once per host."""
    if kind is not None and kind not in ("test_failover", "planned_failover", "unplanned_failover", "failback"):
        return []
    found: dict[str, str] = {}
    for p, recovery_plan in enumerate(config.recovery_plans):
        if kind is not None and recovery_plan.name != plan:
            continue
        for g, group in enumerate(recovery_plan.groups):
            for when, steps in (("before", group.before), ("after", group.after)):
                for a, step in enumerate(steps):
                    if step.script is not None:
                        found.setdefault(step.script.host,
                                         f"recovery_plans[{p}].groups[{g}].{when}[{a}].script.host")
    return [(key, host) for host, key in found.items()]


# ------------------------------------------------------------------------------- running them


def _run_all(checks: Sequence[_Check], workers: int, started: float, deadline_s: float) -> list[Finding]:
    """Every check, at most ``workers`` at a time; a check not done ``deadline_s`` after
    ``started`` (monotonic) is a timeout. The worker threads are daemons: one stuck in a call that never returns is left
    behind rather than holding up the command's exit."""

    results: list[Finding | None] = [None] * len(checks)
    bugs: list[BaseException] = []
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(checks)):
        todo.put(i)
    if not checks:
        return []
    left = [len(checks)]
    lock, done = threading.Lock(), threading.Event()

    def work() -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[i] = _check(checks[i])
            except BaseException as exc:  # a driver's bug: re-raised in the caller's thread
                bugs.append(exc)
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()

    for _ in range(max(1, min(workers, len(checks)))):
        threading.Thread(target=work, name="preflight", daemon=True).start()
    done.wait(max(0.0, started + deadline_s - time.monotonic()))
    if bugs:
        raise bugs[0]
    late = TimeoutError_("no answer in time")
    return [r if r is not None else Finding(c.kind, c.target, c.key, False,
                                            f"no answer within the preflight's {deadline_s:g} s",
                                            late.code, late.category, site=c.site)
            for c, r in zip(checks, results, strict=True)]


def _check(c: _Check) -> Finding:
    t0 = time.monotonic()
    try:
        detail = c.call()
    except AgentError as exc:
        key = c.key_for(exc) if c.key_for is not None else c.key
        return Finding(c.kind, c.target, key, False, exc.message, exc.code, exc.category, site=c.site,
                       seconds=time.monotonic() - t0)
    return Finding(c.kind, c.target, c.key, True, detail, site=c.site, seconds=time.monotonic() - t0)
