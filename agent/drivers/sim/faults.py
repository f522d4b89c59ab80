"""Latency and fault injection for the simulated sites: typed settings and the decisions.

Both are off by default. They are set from the inventory's ``simulation:`` section or at run
time (``SimWorld.set_latency`` / ``SimWorld.inject``) and are kept in the state file, so every
process sharing the world sees the same settings and a fault that fired once stays fired after a
restart.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latency(_Spec):
    """Time one call takes: ``fixed + per_item * len(items)`` seconds (before ``scale``)."""

    fixed: float = Field(default=0.0, ge=0)
    per_item: float = Field(default=0.0, ge=0)


class LatencyModel(_Spec):
    """Latency per call kind. Keys are call kinds or globs (``"vmm.*"``); an exact kind wins
    over a glob, a longer glob over a shorter one. ``scale`` multiplies every delay (0 turns
    latency off without forgetting it)."""

    scale: float = Field(default=1.0, ge=0)
    calls: dict[str, Latency] = Field(default_factory=dict)

    def delay(self, kind: str, items: int) -> float:
        spec = self.calls.get(kind)
        if spec is None:
            globs = [p for p in self.calls if fnmatch.fnmatchcase(kind, p)]
            if not globs:
                return 0.0
            spec = self.calls[max(globs, key=len)]
        return self.scale * (spec.fixed + spec.per_item * items)


FaultKind = Literal["transient", "permanent", "timeout"]


class FaultRule(_Spec):
    """Make matching calls fail.

    * ``call``: call kind or glob (``"vmm.grant_ips"``, ``"hyperv.*"``).
    * ``target``: optional glob matched against the call's target (site, host, DNS server,
      router) and the names its items are about (VM, NIC key, pool, zone, prefix). Without it
      every call of that kind matches.
    * ``fault``: ``transient`` -- the whole call raises ``UnreachableError`` and nothing
      happens; ``timeout`` -- the call raises ``TimeoutError_`` and, with ``applied: true``, its
      effect *did* happen first (the caller cannot tell which); ``permanent`` -- the matching
      items fail with ``injected_fault`` (every item when the call's own target matched) while
      the others proceed. DNS batches are atomic, so there the whole call raises.
    * ``count``: fire on the first N matching calls only; ``rate``: fire with this probability,
      drawn from a generator seeded by the world's seed, the rule's position and the number of
      calls it has seen (reproducible across processes). Neither: fire on every matching call.
    """

    call: str = "*"
    target: str | None = None
    fault: FaultKind
    count: int | None = Field(default=None, ge=1)
    rate: float | None = Field(default=None, ge=0, le=1)
    applied: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> FaultRule:
        if self.count is not None and self.rate is not None:
            raise ValueError("give count or rate, not both")
        if self.applied and self.fault != "timeout":
            raise ValueError("applied is only meaningful for fault 'timeout'")
        return self


class SimulationSpec(_Spec):
    """The ``simulation:`` section of an inventory."""

    seed: int = 0
    latency: LatencyModel = LatencyModel()
    faults: list[FaultRule] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Firing:
    """A rule that fires on this call. ``items``: indices of the items it hits (permanent
    faults); ``None`` when it hits the whole call."""

    index: int
    rule: FaultRule
    items: frozenset[int] | None


def matches_call(rule: FaultRule, kind: str) -> bool:
    return fnmatch.fnmatchcase(kind, rule.call)


def decide(
    sim: dict[str, Any],
    kind: str,
    target: str,
    item_names: Sequence[Iterable[str]],
) -> tuple[list[Firing], bool]:
    """The rules that fire on one call, and whether counters in ``sim`` changed.

    ``sim`` is the state file's ``sim`` section; its per-rule counters (``seen``, ``fired``) are
    updated in place, so the caller must persist it when the second value is true.
    """

    firings: list[Firing] = []
    touched = False
    for index, entry in enumerate(sim["faults"]):
        rule = FaultRule.model_validate(entry["rule"])
        if not matches_call(rule, kind):
            continue
        hit: frozenset[int] | None
        if rule.target is None or fnmatch.fnmatchcase(target, rule.target):
            hit = None
        else:
            hit = frozenset(
                i for i, names in enumerate(item_names) if any(fnmatch.fnmatchcase(n, rule.target) for n in names)
            )
            if not hit:
                continue
        seen = entry["seen"]
        entry["seen"] = seen + 1
        touched = True
        if rule.count is not None:
            fire = entry["fired"] < rule.count
        elif rule.rate is not None:
            fire = random.Random(f"{sim['seed']}:{index}:{seen}").random() < rule.rate
        else:
            fire = True
        if fire:
            entry["fired"] += 1
            firings.append(Firing(index, rule, hit))
    return firings, touched


def any_rule_for(sim: dict[str, Any], kind: str) -> bool:
    """True when some fault rule could match calls of ``kind`` (so the call must take the lock)."""

    return any(fnmatch.fnmatchcase(kind, e["rule"].get("call", "*")) for e in sim["faults"])


def fault_entry(rule: FaultRule) -> dict[str, Any]:
    """The state-file form of a rule: its settings and its counters."""

    return {"rule": rule.model_dump(exclude_defaults=True), "seen": 0, "fired": 0}
