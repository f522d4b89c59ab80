"""An orchestrator's whole drill and failover over HTTP only: preview, test failover, cleanup,
planned failover, commit, reverse and failback on the demo sites, each checked as it ends."""

from __future__ import annotations

import httpx

from tests.apiserver import ApiServer

PLAN = "contoso-apps"


def start(client: httpx.Client, kind: str, **body: object) -> str:
    r = client.post("/v1/operations", json={"kind": kind, "plan": PLAN, **body})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/operations/{r.json()['id']}"
    op_id: str = r.json()["id"]
    return op_id


def through_pauses(api: ApiServer, client: httpx.Client, op_id: str) -> dict:
    op = api.wait(client, op_id)
    while op["status"] == "waiting_for_manual_action":
        assert op["waiting_for"], "a manual pause says what to do"
        r = client.post(f"/v1/operations/{op_id}/resume")
        assert r.status_code == 202, r.text
        op = api.wait(client, op_id, until=lambda o: o["status"] != "waiting_for_manual_action")
        op = api.wait(client, op_id)
    return op


def plan_state(client: httpx.Client) -> str:
    plans = client.get("/v1/plans", params={"refresh": True}).json()["plans"]
    state: str = next(p for p in plans if p["plan"] == PLAN)["state"]
    return state


def test_drill_then_failover_and_back_over_http(api: ApiServer) -> None:
    with api.client("operate") as client:
        assert plan_state(client) == "protected"
        preview = client.post(f"/v1/plans/{PLAN}/preview", json={"kind": "test_failover"})
        assert preview.status_code == 200, preview.text
        checksum = preview.json()["checksum"]
        assert preview.json()["counts"]["reserve"] > 0

        test = start(client, "test_failover", plan_checksum=checksum)
        assert through_pauses(api, client, test)["status"] == "succeeded"
        assert plan_state(client) == "test_failover_running"

        cleanup = start(client, "cleanup_test")
        done = through_pauses(api, client, cleanup)
        assert done["status"] == "succeeded" and done["parent_id"] == test
        assert plan_state(client) == "protected"

        for kind, state in (("planned_failover", "failed_over"), ("commit", "committed"),
                            ("reverse", "reversed"), ("failback", "failed_over")):
            op = through_pauses(api, client, start(client, kind))
            assert op["status"] == "succeeded", (kind, op["errors"])
            assert plan_state(client) in (state, "prepared"), kind

        vms = client.get("/v1/vms", params={"refresh": True}).json()["vms"]
        running = {v["name"]: v["site"] for v in vms if v["power_state"] == "Running" and v["role"] != "test"}
        assert running["sql01"] == "contoso-east", "after the failback the VMs run at the primary again"


def test_a_retried_start_with_the_same_idempotency_key_starts_one_operation(api: ApiServer) -> None:
    with api.client("operate") as client:
        body = {"kind": "test_failover", "plan": PLAN}
        first = client.post("/v1/operations", json=body, headers={"Idempotency-Key": "drill-2026-12-03"})
        again = client.post("/v1/operations", json=body, headers={"Idempotency-Key": "drill-2026-12-03"})
        assert first.status_code == 202 and again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        other = client.post("/v1/operations", json={**body, "kind": "planned_failover"},
                            headers={"Idempotency-Key": "drill-2026-12-03"})
        assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
        listed = client.get("/v1/operations").json()["operations"]
        assert [o["id"] for o in listed] == [first.json()["id"]]


def test_a_stale_plan_checksum_is_refused_with_the_difference(api: ApiServer) -> None:
    with api.client("operate") as client:
        r = client.post("/v1/operations", json={"kind": "test_failover", "plan": PLAN,
                                                "plan_checksum": "sha256:" + "0" * 64})
        assert r.status_code == 409
        problem = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert problem["code"] == "plan_changed"
        assert problem["expected"] == "sha256:" + "0" * 64 and problem["actual"].startswith("sha256:")
        assert client.get("/v1/operations").json()["operations"] == []


def test_refusals_and_bad_input_change_nothing_and_say_what(api: ApiServer) -> None:
    with api.client("operate") as client:
        unknown = client.post("/v1/operations", json={"kind": "test_failover", "plan": "no-such-plan"})
        assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
        assert "contoso-apps" in unknown.json()["detail"]
        bad = client.post("/v1/operations", json={"kind": "explode", "plan": PLAN})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body.kind"
        early = client.post("/v1/operations", json={"kind": "commit", "plan": PLAN})
        assert early.status_code == 404, early.text  # nothing for a commit to follow
        assert "a failover comes first" in early.json()["detail"]
        assert client.get("/v1/operations").json()["operations"] == []
        missing = client.get("/v1/operations/op-000000000000")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_the_event_stream_follows_an_operation_to_its_pause(api: ApiServer) -> None:
    with api.client("operate") as client:
        op_id = start(client, "test_failover")
        events = []
        with client.stream("GET", f"/v1/operations/{op_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
        assert events[-1] == "end" and "progress" in events
        assert api.wait(client, op_id)["status"] in ("waiting_for_manual_action", "succeeded")


def test_notes_and_cancel(api: ApiServer) -> None:
    with api.client("operate") as client:
        op_id = start(client, "test_failover")
        api.wait(client, op_id)
        noted = client.post(f"/v1/operations/{op_id}/notes", json={"text": "checked by the DR lead"})
        assert noted.status_code == 201
        assert noted.json()["notes"][0]["text"] == "checked by the DR lead"
        cancelled = client.post(f"/v1/operations/{op_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        op = api.wait(client, op_id, until=lambda o: o["status"] == "cancelled")
        assert op["status"] == "cancelled"
        assert plan_state(client) == "protected", "the cancel cleaned up the test failover"
        trail = client.get("/v1/audit", params={"operation": op_id, "limit": 1000}).json()["entries"]
        assert any(e["action"] == "operation.note" and e["actor"] == "api:operate-caller" for e in trail)


def test_the_drill_report_is_served_as_html_and_csv(api: ApiServer) -> None:
    with api.client("read") as reader, api.client("operate") as client:
        op_id = start(client, "test_failover")
        through_pauses(api, client, op_id)
        page = reader.get(f"/v1/operations/{op_id}/report")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src" in page.headers["content-security-policy"]
        assert "sql01" in page.text and op_id in page.text
        csv_text = reader.get(f"/v1/operations/{op_id}/report", params={"format": "csv"})
        assert csv_text.headers["content-type"].startswith("text/csv")
        assert "sql01" in csv_text.text
        assert reader.get("/v1/operations/op-nope/report").status_code == 404


def test_metrics_count_remote_calls_and_operations(api: ApiServer) -> None:
    with api.client("operate") as client:
        op_id = start(client, "test_failover")
        api.wait(client, op_id)
        text = client.get("/metrics").text
    assert 'failover_agent_operations{kind="test_failover",status="waiting_for_manual_action"} 1.0' in text
    assert 'failover_agent_remote_call_duration_seconds_count{endpoint="vmm@contoso-west"' in text
    assert "failover_agent_step_duration_seconds_count" in text
    assert "failover_agent_dns_verification_lag_seconds{server=" in text, "the drill's DNS updates were verified"


def test_ready_and_the_last_preflight(api: ApiServer) -> None:
    from agent.preflight_job import run_and_record

    with api.client("read") as client:
        assert client.get("/v1/preflight").json() == {"report": None}
        assert client.get("/v1/ready").json()["checks"]["drivers"]["ok"] is True
        run_and_record(api.served.engine)
        report = client.get("/v1/preflight").json()["report"]
        assert report["ok"] is True and report["plans"] == ["contoso-apps"]
        assert client.get("/v1/ready").json()["checks"]["drivers"]["checked"] == report["at"]


def test_pool_counts_follow_the_reservations_a_drill_makes(api: ApiServer) -> None:
    """What a site admin reads in /v1/pools: each pool's used and free counts move by exactly
    the addresses the agent reserved in it."""
    def counts(client: httpx.Client) -> dict[tuple[str, str], tuple[int, int]]:
        pools = client.get("/v1/pools", params={"refresh": True}).json()["pools"]
        return {(p["site"], p["name"]): (p["used"], p["free"]) for p in pools}

    with api.client("operate") as client:
        before = counts(client)
        assert all(free > 0 for _used, free in before.values())
        op_id = start(client, "test_failover")
        assert through_pauses(api, client, op_id)["status"] == "succeeded"
        after = counts(client)
        held = client.get("/v1/reservations").json()["reservations"]
    mine = [(r["site"], r["pool"]) for r in held if r["operation"] == op_id]
    assert mine, "the drill reserved addresses"
    for key, (used, free) in before.items():
        taken = mine.count(key)
        assert after[key] == (used + taken, free - taken), key
