"""Two agents on one store, each serving its API: the leader executes, the standby answers reads
from the shared store and refuses to start anything (503, naming the leader), and is not ready."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from agent.engine.leader import Leader
from agent.engine.lease import Lease
from tests.apiserver import serving
from tests.rigs import Rig


def leading(rig: Rig) -> tuple[Leader, threading.Thread]:
    leader = Leader(rig.engine, Lease(rig.store, lease_s=5), say=lambda _text: None, poll_s=0.05)
    thread = threading.Thread(target=leader.run, daemon=True)
    thread.start()
    return leader, thread


def until(check: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_the_standby_reads_and_refuses_to_execute(new_rig: Callable[..., Rig]) -> None:
    first = new_rig(name="first")
    second = Rig(first.loaded, first.state_path, first.store_path)  # another agent, same store and sites
    lead, lead_thread = leading(first)
    until(lambda: lead.accepting)
    stand, stand_thread = leading(second)
    until(lambda: stand.role == "standby")
    try:
        with serving(first, leader=lead) as leader_api, \
                serving(second, leader=stand, tokens=leader_api.tokens) as standby_api:  # one config
            with leader_api.client() as to_leader, standby_api.client() as to_standby:
                assert to_leader.get("/v1/ready").json()["ready"] is True
                not_ready = to_standby.get("/v1/ready")
                assert not_ready.status_code == 503 and not_ready.json()["role"] == "standby"

                refused = to_standby.post("/v1/operations", json={"kind": "test_failover", "plan": "contoso-apps"})
                assert refused.status_code == 503, refused.text
                assert refused.json()["code"] == "not_leader" and "pid" in refused.json()["detail"]
                assert refused.headers["retry-after"]

                started = to_leader.post("/v1/operations", json={"kind": "test_failover", "plan": "contoso-apps"})
                assert started.status_code == 202
                op_id = started.json()["id"]
                seen = leader_api.wait(to_leader, op_id)
                assert to_standby.get(f"/v1/operations/{op_id}").json()["status"] == seen["status"]
                assert to_standby.post(f"/v1/operations/{op_id}/resume").status_code == 503
    finally:
        stand.stop()
        lead.stop()
        stand_thread.join(10)
        lead_thread.join(10)
        second.close()
