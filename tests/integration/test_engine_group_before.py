"""A group's ``before:`` steps run before anything of that group changes -- after the previous
group is up -- in a failover and in a test failover; a refused reference names its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.configfile import load_config
from agent.engine.model import OperationKind, OpStatus
from agent.yamlfile import InvalidFileError
from tests.rigs import Rig, Templates, copy_demo

STOP_APP = "Stop the order service on app01 before its group fails over, then resume."


def with_before(data: dict[str, Any]) -> None:
    groups = data["recovery_plans"][0]["groups"]
    groups[1]["before"] = [{"manual": {"instruction": STOP_APP}},
                           {"script": {"host": "hv-west-01", "path": "C:\\DR\\Stop-App.ps1",
                                       "parameters": {"Service": "orders"}}}]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    templates = Templates.build(copy_demo(tmp_path / "cfg", edit=with_before))
    state, store = templates.copy_to(tmp_path / "rig")
    return Rig(templates.loaded, state, store)


@pytest.mark.parametrize("kind", [OperationKind.PLANNED_FAILOVER, OperationKind.TEST_FAILOVER])
def test_the_second_group_waits_at_its_before_step_with_nothing_of_it_changed(rig: Rig, kind: OperationKind) -> None:
    view = rig.engine.start(kind, "contoso-apps")
    while view.status == OpStatus.WAITING.value and view.waiting_for != STOP_APP:
        view = rig.engine.resume(view.id, actor="test")  # the first group's own manual step
    assert view.status == OpStatus.WAITING.value and view.waiting_for == STOP_APP
    by_group: dict[str, set[str]] = {}
    for s in view.steps:
        by_group.setdefault(s.group or "", set()).add(s.status)
    assert by_group["databases"] <= {"succeeded", "skipped"}, "the first group is up"
    second = [s for s in view.steps if s.group == "applications"]
    assert second[0].name == "applications/before/0/manual"
    assert [s.status for s in second[1:]] == ["pending"] * (len(second) - 1), "nothing of the group changed yet"
    assert second[1].name == "applications/before/1/script"

    done = rig.through_pauses(rig.engine.resume(view.id, actor="test"))
    assert done.status == OpStatus.SUCCEEDED.value, done.errors
    script = next(s for s in rig.engine.journal.steps(view.id) if s.name == "applications/before/1/script")
    assert script.status == "succeeded"


def test_a_before_script_on_an_unknown_host_is_refused_at_its_key(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["recovery_plans"][0]["groups"][0]["before"] = [{"script": {"host": "hv-nowhere", "path": "x.ps1"}}]

    with pytest.raises(InvalidFileError, match=r"recovery_plans\[0\]\.groups\[0\]\.before\[0\]\.script\.host"):
        load_config(copy_demo(tmp_path, edit=edit))
