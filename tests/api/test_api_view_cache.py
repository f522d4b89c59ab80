"""The polled operation is answered from its last view while nothing changed, and the answer is
always what a fresh read of the journal says: through steps, a pause, a note, a resume, a cancel."""

from __future__ import annotations

from typing import Any

from agent.api.routes.operations import full_view_json
from tests.apiserver import ApiServer


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k != "elapsed_s"} == {k: v for k, v in b.items() if k != "elapsed_s"}


def test_every_answer_is_the_journal_s_view(api: ApiServer) -> None:
    served = api.served
    with api.client("operate") as client:
        op_id = client.post("/v1/operations", json={"kind": "test_failover", "plan": "contoso-apps"}).json()["id"]
        seen = set()
        for _ in range(400):
            got = client.get(f"/v1/operations/{op_id}").json()
            assert same(got, full_view_json(served, op_id)) or got["status"] == "running"
            seen.add(got["status"])
            if got["status"] == "waiting_for_manual_action" and op_id not in served.running():
                break
        assert same(client.get(f"/v1/operations/{op_id}").json(), full_view_json(served, op_id))
        again = client.get(f"/v1/operations/{op_id}").json()
        assert again["elapsed_s"] >= got["elapsed_s"], "a cached answer still tells the time that passed"

        client.post(f"/v1/operations/{op_id}/notes", json={"text": "checked"})
        noted = client.get(f"/v1/operations/{op_id}").json()
        assert [n["text"] for n in noted["notes"]] == ["checked"]

        client.post(f"/v1/operations/{op_id}/resume")
        done = api.wait(client, op_id)
        assert done["status"] == "succeeded" and same(done, full_view_json(served, op_id))
        assert done["elapsed_s"] == client.get(f"/v1/operations/{op_id}").json()["elapsed_s"], "finished: fixed"


def test_an_unknown_operation_is_still_404(api: ApiServer) -> None:
    with api.client("read") as client:
        assert client.get("/v1/operations/op-000000000000").status_code == 404
