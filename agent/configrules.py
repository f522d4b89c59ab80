"""Bounds and uniqueness rules of the config (:mod:`agent.config` uses them), kept apart so that
the models stay readable.

* Durations are finite and within sane bounds: an infinite timeout or backoff hangs a step
  forever, a negative test-failover age cleans a drill up at the next command, and a huge one
  overflows the clock when the expiry is scheduled -- after the operation was recorded.
* Paths and references hold no NUL byte (the operating system cannot take one: the file would
  fail at the moment it is needed, not at ``validate``).
* Names are unique per kind (sites, Hyper-V hosts, routers, DNS servers ...), compared as Windows
  compares them (case-insensitively): a reference to a duplicate name would pick one silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from agent.config import AgentConfig

MAX_TEST_FAILOVER_AGE = timedelta(days=365)


class Model(BaseModel):
    """Every config section: unknown keys are refused (a typo must not be ignored), values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("contains a NUL byte")
    return value


def _path_without_nul(value: Path) -> Path:
    no_nul(str(value))
    return value


def _max_age(value: timedelta) -> timedelta:
    if not timedelta(0) < value <= MAX_TEST_FAILOVER_AGE:
        raise ValueError(f"a test failover's maximum age is more than 0 and at most {MAX_TEST_FAILOVER_AGE.days} "
                         f"days (e.g. P14D); got {_shown(value)}")
    return value


MAX_PREFLIGHT_INTERVAL = timedelta(days=7)


def _interval(value: timedelta) -> timedelta:
    if value != timedelta(0) and not timedelta(seconds=1) <= value <= MAX_PREFLIGHT_INTERVAL:
        raise ValueError(f"the preflight interval is 0 (off) or from 1 second to {MAX_PREFLIGHT_INTERVAL.days} days "
                         f"(e.g. PT1H); got {_shown(value)}")
    return value


def _shown(value: timedelta) -> str:
    return f"{value.days} days" if abs(value.days) >= 1 else f"{value.total_seconds():g} seconds"


SafePath = Annotated[Path, AfterValidator(_path_without_nul)]
TestFailoverAge = Annotated[timedelta, AfterValidator(_max_age)]
PreflightInterval = Annotated[timedelta, AfterValidator(_interval)]


def seconds(default: float, *, high: float, zero_ok: bool = False) -> float:
    """A finite duration in seconds, above 0 (or from 0 when ``zero_ok``) up to ``high``."""

    if zero_ok:
        return Field(default=default, ge=0, le=high, allow_inf_nan=False)
    return Field(default=default, gt=0, le=high, allow_inf_nan=False)


def duplicate_names(cfg: AgentConfig) -> list[str]:
    """``key.path: message`` for every name used a second time within its kind."""

    problems: list[str] = []
    kinds: list[tuple[str, Iterable[tuple[str, str]]]] = [
        ("site", [(f"third_sites[{i}].name", t.name) for i, t in enumerate(cfg.third_sites)]),
        ("Hyper-V host", [(f"sites[{i}].hyperv_hosts[{j}].name", h.name)
                          for i, s in enumerate(cfg.sites) for j, h in enumerate(s.hyperv_hosts)]),
        ("router", [(f"sites[{i}].routers[{j}].name", r.name) for i, s in enumerate(cfg.sites)
                    for j, r in enumerate(s.routers)]
         + [(f"third_sites[{i}].routers[{j}].name", r.name) for i, t in enumerate(cfg.third_sites)
            for j, r in enumerate(t.routers)]),
        ("DNS server", [(f"dns.servers[{i}].name", d.name) for i, d in enumerate(cfg.dns.servers)]),
        ("API token", [(f"api.tokens[{i}].name", t.name) for i, t in enumerate(cfg.api.tokens)]),
        ("notification target", [(f"notifications.webhooks[{i}].name", w.name)
                                 for i, w in enumerate(cfg.notifications.webhooks)]
         + [(f"notifications.email[{i}].name", e.name) for i, e in enumerate(cfg.notifications.email)]),
    ]
    for i, plan in enumerate(cfg.recovery_plans):
        kinds.append((f"group of plan {plan.name!r}",
                      [(f"recovery_plans[{i}].groups[{j}].name", g.name) for j, g in enumerate(plan.groups)]))
    for i, site in enumerate(cfg.sites):
        kinds.append((f"DNS server of site {site.name!r}",
                      [(f"sites[{i}].dns_servers[{j}]", n) for j, n in enumerate(site.dns_servers)]))
    zones = [(f"dns.zones[{i}]", f"{z.name} on {z.server}") for i, z in enumerate(cfg.dns.zones)]
    kinds.append(("zone", zones))
    # The sites of the protection pair are checked with the pair; a third site may not reuse one.
    pair = {s.name.casefold(): f"sites[{i}].name" for i, s in enumerate(cfg.sites)}
    for i, t in enumerate(cfg.third_sites):
        if t.name.casefold() in pair:
            problems.append(f"third_sites[{i}].name: {t.name!r} is already the name of {pair[t.name.casefold()]}")
    for what, named in kinds:
        first: dict[str, str] = {}
        for key, name in named:
            folded = name.casefold()
            if folded in first:
                problems.append(f"{key}: duplicate {what} name {name!r} (also {first[folded]})")
            first.setdefault(folded, key)
    return problems
