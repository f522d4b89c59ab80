"""Rebuild a Plan from the JSON form stored with an operation (follow-up operations -- cleanup,
commit, reverse, cancel -- work from the exact plan their parent executed, not a fresh one)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from pydantic import BaseModel

from agent.domain.model import FailoverIpSetting, RecordType, Route
from agent.domain.plan import CHANGE_TYPES, Change, Plan, PlannedVm

_BY_KIND = {t.kind: t for t in CHANGE_TYPES}
_NESTED: dict[str, type[BaseModel]] = {
    "settings": FailoverIpSetting,
    "previous": FailoverIpSetting,
    "withdraw": Route,
    "announce": Route,
}


def _change(data: dict[str, Any]) -> Change:
    cls = _BY_KIND[data["kind"]]
    kwargs: dict[str, Any] = {}
    for name in (f.name for f in fields(cls)):
        if name not in data:
            continue
        value = data[name]
        if name in _NESTED:
            value = tuple(_NESTED[name].model_validate(v) for v in value)
        elif name == "addresses":
            value = tuple(tuple(a) for a in value)
        elif name == "type":
            value = RecordType(value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def plan_from_json(data: dict[str, Any]) -> Plan:
    plan = Plan(
        plan=data["plan"], kind=data["kind"], source_site=data["source_site"], target_site=data["target_site"],
        vms=tuple(PlannedVm(**v) for v in data["vms"]),
        changes=tuple(_change(c) for c in data["changes"]),
        notes=tuple(data.get("notes", ())),
        excluded=tuple((vm, why) for vm, why in data.get("excluded", ())),
        recovery_point=data.get("recovery_point", "latest"),
    )
    if data.get("checksum") and plan.checksum() != data["checksum"]:
        raise ValueError(f"stored plan {data['plan']} does not match its checksum")
    return plan
