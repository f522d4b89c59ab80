"""Recorded host answers (``tests/recordings/hyperv/``) replayed through :class:`PsHyperV` under
the engine's retry loop: a transient fault of the wire is retried, a terminating error of the
script stops at once, and one failed item leaves the others of its batch standing."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from agent.config import Endpoint, RetryPolicy
from agent.domain.model import FailoverIpSetting, NicFailoverConfig
from agent.drivers.ps.hyperv import PsHyperV
from agent.drivers.remoting import RemoteScriptError, script_dir
from agent.engine.retrying import RetryingPort
from agent.ports import HyperV
from tests.replay import Recorded

RECORDINGS = Path(__file__).parents[1] / "recordings" / "hyperv"
SITES = {"hv-east-01": "contoso-east", "hv-west-01": "contoso-west", "hv-west-02": "contoso-west"}


class Replay(Recorded):
    directory = RECORDINGS


def port(replay: Replay) -> HyperV:
    hosts = {h: Endpoint(transport="psrp", address=f"{h}.contoso.local") for h in ("hv-west-01", "hv-west-02")}
    driver = PsHyperV(replay, "contoso-west", hosts, sites_by_host=SITES, sites=["contoso-east", "contoso-west"])
    policy = RetryPolicy(attempts=3, initial_backoff_s=0, max_backoff_s=0)
    return RetryingPort(driver, policy, lambda s: None)  # type: ignore[return-value]


@pytest.mark.parametrize("path", sorted(RECORDINGS.glob("*.json")), ids=lambda p: p.stem)
def test_recorded_answers_have_the_documented_shape(path: Path) -> None:
    recording = json.loads(path.read_text(encoding="utf-8"))
    schema = json.loads((script_dir() / f"{recording['script']}.schema.json").read_text(encoding="utf-8"))
    documents = [a for a in recording["answers"] if "raise" not in a]
    for document in documents:
        jsonschema.validate(document, schema)


def test_partial_failure_carries_on_per_item() -> None:
    replay = Replay("start-test-partial")
    results = port(replay).replicate("hv-west-01", "start_test", ["web01", "ghost", "sql01"])
    web01, ghost, sql01 = results
    assert web01.ok and web01.changed and web01.value is not None
    assert web01.value.test_vm == "web01 - Test"
    # FQDNs as Hyper-V reports them are placed on the config's hosts and sites.
    assert (web01.value.primary_host, web01.value.primary_site) == ("hv-east-01", "contoso-east")
    assert (web01.value.replica_host, web01.value.replica_site) == ("hv-west-01", "contoso-west")
    assert ghost.error is not None and ghost.error.code == "not_found"
    assert sql01.error is not None and sql01.error.code == "invalid_replication_state"
    assert sql01.error.fields["fully_qualified_error_id"].startswith("InvalidOperation,")
    assert len(replay.sent) == 1


def test_transient_fault_is_retried_and_items_mapped() -> None:
    replay = Replay("set-failover-transient-then-answer")
    wanted = [NicFailoverConfig(vm="app01", nic="nic0", host="hv-west-02", settings=(
        FailoverIpSetting(address="172.16.1.20", prefix_length=24, gateway="172.16.1.1",
                          dns_servers=("172.16.1.2",)),))]
    ok, bad = port(replay).set_failover_configs("hv-west-02", wanted)
    assert len(replay.sent) == 2  # the same batch, sent again after the fault
    assert replay.sent[0] == replay.sent[1]
    assert ok.changed and ok.value == wanted[0]  # one setting unwrapped by ConvertTo-Json still reads as one
    assert bad.error is not None and bad.error.code == "invalid_setting"


def test_terminating_error_stops_without_retry() -> None:
    replay = Replay("power-terminating")
    with pytest.raises(RemoteScriptError) as failed:
        port(replay).set_power("hv-west-01", "start", ["web01"])
    assert failed.value.category == "permanent"
    assert failed.value.fields["fully_qualified_error_id"].startswith("VirtualizationException,")
    assert len(replay.sent) == 1


def test_the_replica_host_lists_its_recovery_points_oldest_first_even_one_unwrapped() -> None:
    replay = Replay("list-recovery-points")
    web01, sql01 = port(replay).get_replications("hv-west-01", ["web01", "sql01"])
    assert [p.name for p in web01.recovery_points] == [
        "web01 - (12/3/2026 - 5:00:12 AM)", "web01 - (12/3/2026 - 6:00:09 AM)", "web01 - (12/3/2026 - 7:00:11 AM)"]
    assert [p.app_consistent for p in web01.recovery_points] == [True, False, False]
    assert web01.recovery_points[0].created.isoformat() == "2026-12-03T05:00:12.441000+00:00"
    [only] = sql01.recovery_points
    assert (only.name, only.app_consistent) == ("sql01 - (12/3/2026 - 6:00:03 AM)", True)
    assert web01.failover_point is None  # a read cannot tell which point a failover used


def test_a_failover_to_named_points_sends_them_and_one_missing_point_fails_that_vm_only() -> None:
    replay = Replay("failover-to-point-partial")
    web01, sql01 = port(replay).replicate("hv-west-01", "failover", ["web01", "sql01"], {
        "web01": "web01 - (12/3/2026 - 5:00:12 AM)", "sql01": "sql01 - (12/2/2026 - 11:00:00 PM)"})
    assert web01.ok and web01.changed and web01.value is not None
    assert web01.value.failover_point == "web01 - (12/3/2026 - 5:00:12 AM)"
    assert sql01.error is not None and sql01.error.code == "not_found"
    assert "11:00:00 PM" in sql01.error.message


def test_a_test_failover_naming_no_point_sends_none_so_hyper_v_uses_the_latest() -> None:
    replay = Replay("start-test-partial")
    port(replay).replicate("hv-west-01", "start_test", ["web01", "ghost", "sql01"])
    assert [json.loads(s["PointsJson"]) for s in replay.sent] == [{}]
