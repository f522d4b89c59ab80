"""The polled operation is answered from its last view while nothing changed, and the answer is
always what a fresh read of the journal says: through steps, a pause, a note, a resume, a cancel.
Most answers come from the fast path before routing (``agent.api.polled``); each is compared,
byte for byte, with the view encoded afresh."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from agent.api.routes.operations import full_view_json
from agent.api.viewcache import encode
from agent.cli.serve import QuietPolls
from tests.apiserver import ApiServer, serving
from tests.rigs import Rig, Templates


@pytest.fixture
def api_on_store(new_rig: Callable[..., Rig], store_demo: Templates) -> Iterator[ApiServer]:
    """The API on the demo with its store on SQLite, then on PostgreSQL."""
    with serving(new_rig(store_demo)) as server:
        yield server


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k != "elapsed_s"} == {k: v for k, v in b.items() if k != "elapsed_s"}


def as_fresh(api: ApiServer, op_id: str, answer: httpx.Response) -> bytes:
    """The journal's view now, encoded as the route encodes it, at the answer's elapsed time."""
    fresh = full_view_json(api.served, op_id)
    if fresh["finished_at"] is None:
        fresh["elapsed_s"] = answer.json()["elapsed_s"]
    return encode(fresh)


def test_every_answer_is_the_journal_s_view(api: ApiServer) -> None:
    served = api.served
    with api.client("operate") as client:
        op_id = client.post("/v1/operations", json={"kind": "test_failover", "plan": "contoso-apps"}).json()["id"]
        seen = set()
        deadline = time.monotonic() + 120  # polls, not a count: on a loaded machine 400 may all come early
        while True:
            r = client.get(f"/v1/operations/{op_id}")
            got = r.json()
            # Compared only where the operation is not moving on between the answer and the check.
            assert r.content == as_fresh(api, op_id, r) or got["status"] in ("pending", "running")
            seen.add(got["status"])
            if got["status"] == "waiting_for_manual_action" and op_id not in served.running():
                break
            assert time.monotonic() < deadline, f"never paused for the manual step: {sorted(seen)}"
        r = client.get(f"/v1/operations/{op_id}")
        assert r.content == as_fresh(api, op_id, r)
        again = client.get(f"/v1/operations/{op_id}").json()
        assert again["elapsed_s"] >= r.json()["elapsed_s"], "a cached answer still tells the time that passed"

        client.post(f"/v1/operations/{op_id}/notes", json={"text": "checked"})
        noted = client.get(f"/v1/operations/{op_id}")
        assert [n["text"] for n in noted.json()["notes"]] == ["checked"]
        assert noted.content == as_fresh(api, op_id, noted)

        client.post(f"/v1/operations/{op_id}/resume")
        done = api.wait(client, op_id)
        assert done["status"] == "succeeded" and same(done, full_view_json(served, op_id))
        for _ in range(3):  # finished: the same bytes every time, elapsed time included
            assert client.get(f"/v1/operations/{op_id}").content == encode(full_view_json(served, op_id))


def test_the_etag_answers_304_until_something_shown_changes(api_on_store: ApiServer) -> None:
    api = api_on_store
    with api.client("operate") as client:
        op_id = client.post("/v1/operations", json={"kind": "test_failover", "plan": "contoso-apps"}).json()["id"]
        api.wait(client, op_id, until=lambda op: op["status"] == "waiting_for_manual_action")
        first = client.get(f"/v1/operations/{op_id}")
        etag = first.headers["etag"]
        assert etag.startswith('W/"') and first.headers["cache-control"] == "no-cache"

        unchanged = client.get(f"/v1/operations/{op_id}", headers={"If-None-Match": etag})
        assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
        assert api.served.views._loop_reader is not None, "answered by the fast path, on this store too"
        listed = client.get(f"/v1/operations/{op_id}", headers={"If-None-Match": f'W/"other", {etag}'})
        assert listed.status_code == 304
        other = client.get(f"/v1/operations/{op_id}", headers={"If-None-Match": 'W/"other"'})
        assert other.status_code == 200 and other.json()["id"] == op_id

        client.post(f"/v1/operations/{op_id}/notes", json={"text": "seen at the console"})
        noted = client.get(f"/v1/operations/{op_id}", headers={"If-None-Match": etag})
        assert noted.status_code == 200 and noted.headers["etag"] != etag
        assert [n["text"] for n in noted.json()["notes"]] == ["seen at the console"]
        assert noted.content == as_fresh(api, op_id, noted)

        client.post(f"/v1/operations/{op_id}/resume")
        done = api.wait(client, op_id)
        final = client.get(f"/v1/operations/{op_id}", headers={"If-None-Match": noted.headers["etag"]})
        assert done["status"] == "succeeded" and final.status_code == 200
        again = client.get(f"/v1/operations/{op_id}", headers={"If-None-Match": final.headers["etag"]})
        assert again.status_code == 304


def test_a_kept_view_still_needs_a_good_token(api: ApiServer) -> None:
    with api.client("operate") as client:
        op_id = client.post("/v1/operations", json={"kind": "test_failover", "plan": "contoso-apps"}).json()["id"]
        api.wait(client, op_id)
        etag = client.get(f"/v1/operations/{op_id}").headers["etag"]  # kept now
    path = f"/v1/operations/{op_id}"
    with api.client(None) as anonymous:
        for headers in ({}, {"Authorization": "Bearer fa_not-a-token"}, {"Authorization": "Basic dXNlcjpwdw=="},
                        {"Authorization": "Bearer"}):
            r = anonymous.get(path, headers={**headers, "If-None-Match": etag})
            assert r.status_code == 401, headers
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] == "unauthenticated" and "steps" not in r.json()
    with api.client("read") as reader:
        assert reader.get(path).json()["id"] == op_id
        assert reader.get(path + "/").status_code == 307  # not the polled route: routed (redirected) as before


def test_an_unknown_operation_is_still_404(api: ApiServer) -> None:
    with api.client("read") as client:
        assert client.get("/v1/operations/op-000000000000").status_code == 404
        assert client.get("/v1/operations/op-000000000000").json()["code"] == "not_found"


def test_answered_polls_stay_out_of_the_access_log() -> None:
    def line(method: str, path: str, status: int) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                                 ("127.0.0.1:5000", method, path, "1.1", status), None)

    quiet = QuietPolls()
    assert not quiet.filter(line("GET", "/v1/operations/op-1", 200))
    assert not quiet.filter(line("GET", "/v1/operations/op-1?x=1", 304))
    for kept in (line("GET", "/v1/operations/op-1", 401), line("GET", "/v1/operations/op-1", 404),
                 line("POST", "/v1/operations/op-1/resume", 202), line("GET", "/v1/operations/op-1/report", 200),
                 line("GET", "/v1/operations", 200), line("GET", "/v1/plans", 200)):
        assert quiet.filter(kept), kept.args
