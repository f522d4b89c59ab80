"""The audit trail of the changes the engine makes at the (simulated) sites: every change the
sites saw is in it once, with what was there before and after; written before the step's outcome
and kept across kills, retries and resumes; script output kept, capped, with no secret in it."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from agent.engine.audit import SCRIPT_STREAM_CAP, StepAudit, audited_ports
from agent.engine.model import OperationKind, OpStatus
from agent.engine.service import Engine
from agent.errors import PermanentError
from agent.ports import PORT_CHANGES, PORT_READS, ScriptResult, Vmm, unclassified_methods
from tests.rigs import ACTOR, Killed, Rig, copy_demo, kill_at, no_sleep

# The simulator names a script run "script.run"; the trail names it after the port's method.
SIM_KIND = {"script.run_script": "script.run"}


def changes_in_trail(rig: Rig, op_id: str | None = None) -> list[Any]:
    return [a for a in rig.store.audit_trail(op_id, limit=100_000) if a.key is not None]


def test_every_change_the_sites_saw_is_audited_once_with_before_and_after(new_rig) -> None:
    rig = new_rig()
    failover = rig.start(OperationKind.PLANNED_FAILOVER)
    commit = rig.start(OperationKind.COMMIT)
    assert (failover.status, commit.status) == (OpStatus.SUCCEEDED.value, OpStatus.SUCCEEDED.value)

    rows = changes_in_trail(rig)
    made = Counter(SIM_KIND.get(a.action, a.action) for a in rows if a.details["result"] in ("changed", "succeeded"))
    seen = Counter()
    for call in rig.world.calls():
        if not call.kind.endswith(("read_inventory", "read_routes", "get_replications", "get_failover_configs",
                                   ".read", ".verify")):
            seen[call.kind] += len(call.changed)
    assert made == +seen, "one audit row per item the sites changed"
    # Every kind of change the README promises, each with before and after.
    for kind in ("routes.withdraw", "routes.announce", "hyperv.set_failover_configs", "hyperv.replicate.prepare",
                 "hyperv.replicate.failover", "hyperv.replicate.complete", "hyperv.set_power.stop",
                 "hyperv.set_power.start", "script.run", "vmm.grant_ips", "dns.apply"):
        assert made[kind], f"no {kind} in the trail"
    for a in rows:
        assert a.details["before"] is not None or a.action == "vmm.connect_nics", a.action
        assert a.details["after"] is not None, a.action

    by = {(a.action, a.target): a.details for a in rows}
    assert by[("hyperv.set_power.stop", "contoso-east/hv-east-01/sql01")] | {"step": ""} == {
        "step": "", "before": "Running", "after": "Off", "result": "changed"}
    assert by[("routes.withdraw", "rtr-east/192.168.1.0/24")]["before"] == ["via 10.10.0.1 metric 256"]
    assert by[("routes.announce", "rtr-west/192.168.1.0/24")]["after"] == ["via 10.20.0.1 metric 256"]
    assert by[("hyperv.set_failover_configs", "contoso-west/hv-west-01/app01/nic0")]["before"] == "none"
    dns = by[("dns.apply", "dns-contoso/app01.corp.contoso.example./A")]
    assert (dns["before"], dns["after"]) == ({"values": ["172.16.1.10"], "ttl": 60},
                                             {"values": ["172.16.1.10"], "ttl": 3600}), "commit's TTL restore"


def test_a_change_is_audited_before_the_step_is_journalled_and_once_across_a_kill(new_rig) -> None:
    step = "databases/set-failover-ip/hv-west-01"
    rig = new_rig(crash_hook=kill_at("acted", step))
    with pytest.raises(Killed):
        rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    op = rig.engine.operations()[0]
    assert next(s for s in rig.engine.journal.steps(op.id) if s.name == step).outcome is None
    [row] = [a for a in changes_in_trail(rig, op.id) if a.details["step"] == step]
    assert (row.details["before"], row.details["result"]) == ("none", "changed")

    rig.restart()
    rig.through_pauses(rig.engine.resume_unfinished()[0])
    assert rig.engine.view(op.id).status == OpStatus.SUCCEEDED.value
    assert next(s for s in rig.engine.journal.steps(op.id) if s.name == step).attempts == 2
    [again] = [a for a in changes_in_trail(rig, op.id) if a.details["step"] == step]
    assert (again.id, again.details["result"], again.details["before"]) == (row.id, "changed", "none")


def test_a_call_cut_off_by_a_kill_leaves_a_pending_row_that_the_resume_completes(new_rig) -> None:
    rig = new_rig()
    hv = rig.ports.hyperv["contoso-west"]
    real = hv.set_failover_configs

    def applied_then_killed(host: str, configs: Any) -> Any:
        done = real(host, configs)
        # The kill cuts sql01's call; the next groups' failover IPs, set beside it, go through.
        if any(c.vm == "sql01" for c in configs):
            raise Killed("after the host applied it")
        return done

    hv.set_failover_configs = applied_then_killed  # type: ignore[method-assign]
    with pytest.raises(Killed):
        rig.engine.start(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    op = rig.engine.operations()[0]
    [pending] = [a for a in changes_in_trail(rig, op.id) if a.action == "hyperv.set_failover_configs"
                 and a.details["result"] == "pending"]
    assert pending.details["before"] == "none"
    assert pending.details["after"] == ["192.168.1.20/24 gw 192.168.1.1 dns 192.168.1.5",
                                        "192.168.1.21/24 gw 192.168.1.1 dns 192.168.1.5"]

    rig.restart()  # the host holds the new configuration; the step runs again and finds it in place
    rig.through_pauses(rig.engine.resume_unfinished()[0])
    [done] = [a for a in changes_in_trail(rig, op.id) if a.target == pending.target]
    assert done.id == pending.id
    assert (done.details["result"], done.details["before"]) == ("changed", "none")
    assert done.details["note"] == "made by an earlier attempt that was cut off"


def test_a_call_that_times_out_after_applying_is_audited_once(new_rig) -> None:
    rig = new_rig()
    rig.world.inject({"call": "routes.announce", "target": "rtr-west", "fault": "timeout", "applied": True, "count": 1})
    assert rig.start(OperationKind.PLANNED_FAILOVER).status == OpStatus.SUCCEEDED.value
    [row] = [a for a in changes_in_trail(rig) if a.action == "routes.announce" and a.target.startswith("rtr-west/")]
    assert (row.details["before"], row.details["after"]) == ("absent", ["via 10.20.0.1 metric 256"])
    assert row.details["result"] == "changed" and "error" not in row.details


class Chatty:
    """A script runner whose script prints far more than the trail keeps, and a secret."""

    def run_script(self, host: str, path: str, parameters: dict[str, Any], timeout_s: float) -> ScriptResult:
        token = parameters["ApiToken"]
        return ScriptResult(host=host, path=path, succeeded=True,
                            output={"token": token, "seen": ["ok", f"with {token}"]},
                            stdout=f"using {token}\n" + "x" * (2 * SCRIPT_STREAM_CAP), stderr="warning: slow\n")


def with_secret(data: dict[str, Any]) -> None:
    script = data["recovery_plans"][0]["groups"][1]["after"][0]["script"]
    script["parameters"]["ApiToken"] = "s3cr3t-t0ken"


def test_script_output_is_kept_capped_and_without_secrets(tmp_path) -> None:
    from tests.rigs import Templates

    rig = Rig(*_files(tmp_path, Templates.build(copy_demo(tmp_path / "cfg", edit=with_secret))))
    try:
        rig.engine = Engine(rig.config, replace(rig.ports, scripts=Chatty()), rig.store, sleep=no_sleep)
        op = rig.start(OperationKind.TEST_FAILOVER)
        assert op.status == OpStatus.SUCCEEDED.value
        [step] = [s for s in rig.engine.journal.steps(op.id) if s.action == "script"]
        kept = step.outcome["items"][0]["value"]
        assert kept["stdout_truncated"] == {"kept_bytes": SCRIPT_STREAM_CAP,
                                          "total_bytes": len("using ***\n") + 2 * SCRIPT_STREAM_CAP}
        assert len(kept["stdout"].encode()) == SCRIPT_STREAM_CAP and kept["stdout"].startswith("using ***\n")
        assert kept["stderr"] == "warning: slow\n" and "stderr_truncated" not in kept
        assert kept["parameters"]["ApiToken"] == "***"
        assert kept["output"] == {"token": "***", "seen": ["ok", "with ***"]}
        [row] = [a for a in changes_in_trail(rig, op.id) if a.action == "script.run_script"]
        assert row.details["after"] == kept and row.details["result"] == "succeeded"
        # (The plan keeps the parameter to run the script again on a resume: the config holds it so.)
        written = json.dumps([a.details for a in rig.store.audit_trail(limit=100_000)]
                             + [s.outcome for s in rig.engine.journal.steps(op.id)])
        assert "s3cr3t-t0ken" not in written
    finally:
        rig.close()


def _files(tmp_path, templates) -> tuple[Any, Any, Any]:
    state, store = templates.copy_to(tmp_path / "rig")
    return templates.loaded, state, store


def test_every_port_method_is_a_read_or_a_change() -> None:
    for protocol in PORT_CHANGES:
        assert not unclassified_methods(protocol), protocol.__name__
        assert not PORT_READS[protocol] & PORT_CHANGES[protocol]

    class VmmWithMore(Vmm):
        def release_everything(self) -> None:  # a new changing method nobody classified
            ...

    assert unclassified_methods(VmmWithMore) == {"release_everything"}


def test_a_step_cannot_call_a_port_method_that_is_not_classified(new_rig) -> None:
    rig = new_rig()
    vmm = rig.ports.vmm["contoso-west"]
    vmm.release_everything = lambda: None  # type: ignore[attr-defined]
    ports = audited_ports(rig.ports, StepAudit(rig.store, "op-x", ACTOR, 0, "step"))
    with pytest.raises(PermanentError, match="release_everything is neither a read nor a change"):
        ports.vmm["contoso-west"].release_everything()  # type: ignore[attr-defined]
    assert ports.vmm["contoso-west"].site == "contoso-west"


def test_a_call_that_finds_everything_in_place_leaves_no_change_in_the_trail(new_rig) -> None:
    rig = new_rig()
    drill = rig.engine.start(OperationKind.TEST_FAILOVER, "contoso-apps")  # paused after the databases
    assert drill.status == OpStatus.WAITING.value
    cancelled = rig.engine.cancel(drill.id, actor=ACTOR)
    assert cancelled.status == OpStatus.CANCELLED.value
    stopped = [a for a in changes_in_trail(rig) if a.action == "hyperv.replicate.stop_test"]
    # Only sql01 had a test VM; the cleanup asked for the others too, and Hyper-V had nothing to do.
    assert [(a.target, a.details["result"], a.details["before"]) for a in stopped] == [
        ("contoso-west/hv-west-01/sql01", "changed", "Replicating with a test VM")]


def test_a_call_refused_at_first_and_retried_ends_as_the_retry_did(new_rig) -> None:
    rig = new_rig()
    rig.world.inject({"call": "hyperv.set_power.stop", "target": "sql01", "fault": "transient", "count": 1})
    assert rig.start(OperationKind.PLANNED_FAILOVER).status == OpStatus.SUCCEEDED.value
    [row] = [a for a in changes_in_trail(rig) if a.action == "hyperv.set_power.stop" and a.target.endswith("/sql01")]
    assert (row.details["result"], row.details["before"], row.details["after"]) == ("changed", "Running", "Off")
    assert "error" not in row.details and "note" not in row.details
