"""An orchestrator picks the recovery point over HTTP: the preview shows and pins it, a start
with ``options.recovery_point`` fails over to it, a change of point follows before the commit,
and a point no replica holds is refused (409, as every plan refusal) with nothing started."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.api.test_api_end_to_end import PLAN, start, through_pauses
from tests.apiserver import ApiServer, serving
from tests.integration.test_recovery_points import VMS, pointed  # noqa: F401  (the fixture)
from tests.rigs import Rig, Templates


@pytest.fixture
def api(pointed: Templates, new_rig: Callable[..., Rig]) -> Iterator[ApiServer]:  # noqa: F811
    with serving(new_rig(pointed)) as server:
        yield server


def test_a_failover_to_a_named_point_then_a_change_over_http(api: ApiServer) -> None:
    with api.client("operate") as client:
        preview = client.post(f"/v1/plans/{PLAN}/preview",
                              json={"kind": "unplanned_failover", "recovery_point": "before-patch"})
        assert preview.status_code == 200, preview.text
        assert {v["recovery_point"] for v in preview.json()["vms"]} == {"before-patch"}
        op_id = start(client, "unplanned_failover", plan_checksum=preview.json()["checksum"],
                      options={"recovery_point": "before-patch"})
        assert through_pauses(api, client, op_id)["status"] == "succeeded"
        change = start(client, "change_recovery_point", options={"recovery_point": "latest"})
        done = through_pauses(api, client, change)
        assert done["status"] == "succeeded" and done["parent_id"] == op_id
    reps = api.served.engine.ports.hyperv["contoso-west"].get_replications("hv-west-01", list(VMS))
    assert {r.failover_point for r in reps} == {None}


def test_a_point_no_replica_holds_is_refused_and_nothing_starts(api: ApiServer) -> None:
    with api.client("operate") as client:
        r = client.post("/v1/operations", json={"kind": "planned_failover", "plan": PLAN,
                                                "options": {"recovery_point": "after-patch"}})
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "plan_refused"
        assert "recovery_point_not_found" in r.text
        assert client.get("/v1/operations").json()["operations"] == []


def test_a_malformed_point_is_a_validation_error_naming_the_field(api: ApiServer) -> None:
    with api.client("operate") as client:
        r = client.post("/v1/operations", json={"kind": "planned_failover", "plan": PLAN,
                                                "options": {"recovery_point": "bad\npoint"}})
        assert r.status_code == 422, r.text
        assert "recovery_point" in r.text
