"""'failover-agent status' and the previews of every kind (issue 8, finding 9), run as a site admin
would on the demo: the state read back before and after each kind, at 80 columns and as JSON; the
checksum 'plan' prints for any kind is the one 'run' accepts; commit, reverse and cancelling a
failover show what they change and ask first."""

from __future__ import annotations

import json

import pytest

from agent.cli import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_WAITING, session
from agent.configfile import DEMO_PLAN
from tests.rigs import run_cli as run
from tests.unit.test_cli_ops import op_id_in, ops_json, snapshot

pytestmark = pytest.mark.usefixtures("cli_env")

PLAN_KEYS = ["plan", "state", "primary_site", "recovery_site", "vms", "test_failover", "last_test_failover",
             "failover", "committed_by", "unfinished", "reservations", "stale", "kinds_allowed"]
VM_KEYS = ["vm", "state", "replication", "primary_site", "replica_site", "test_vm", "running_at", "off_everywhere"]



def status() -> tuple[str, dict]:
    text, as_json = run("status"), run("status", "--plan", DEMO_PLAN, "--json")
    assert text.exit_code == as_json.exit_code == EXIT_OK, text.output + as_json.output
    too_wide = [line for line in text.stdout.splitlines() if len(line) > 80]
    assert too_wide == [], "status reads right at 80 columns"
    body = json.loads(as_json.stdout)
    assert list(body) == ["mode", "plans"] and len(body["plans"]) == 1
    plan = body["plans"][0]
    assert list(plan) == PLAN_KEYS
    assert all(list(vm) == VM_KEYS for vm in plan["vms"])
    assert text.stdout.startswith(f"plan {DEMO_PLAN}: ")
    return text.stdout, plan


def finish(result) -> None:
    """Run through the manual pause the demo's plan holds, as an operator would."""
    if result.exit_code == EXIT_WAITING:
        result = run("ops", "resume", op_id_in(result.stdout))
    assert result.exit_code == EXIT_OK, result.output


STEPS = [
    ("prepare", "prepared", "prepared (addresses reserved)"),
    ("test", "test_failover_running", "test failover running"),
    ("cleanup", "prepared", "prepared (addresses reserved)"),
    ("planned", "failed_over", "failed over, awaiting commit"),
    ("commit", "committed", "committed"),
    ("reverse", "reversed", "reversed (replicating back)"),
    ("failback", "failed_over", "failed over, awaiting commit"),
    ("commit", "committed", "committed"),
    ("reverse", "prepared", "prepared (addresses reserved)"),
]


def test_status_before_and_after_each_kind() -> None:
    text, plan = status()
    assert plan["state"] == "protected" and "last successful test failover: none" in text
    assert plan["kinds_allowed"] == ["prepare", "test_failover", "planned_failover", "unplanned_failover"]
    for kind, state, words in STEPS:
        finish(run("run", "--plan", DEMO_PLAN, "--kind", kind, "--yes"))
        text, plan = status()
        assert plan["state"] == state, kind
        assert text.splitlines()[0] == f"plan {DEMO_PLAN}: {words}"
        if kind == "test":
            test_op = plan["test_failover"]["id"]
            assert f"test failover running: {test_op} since" in text
            assert plan["kinds_allowed"] == ["prepare", "cleanup_test"]
        if kind == "planned":
            assert plan["kinds_allowed"] == ["commit", "change_recovery_point"] and "can run now: commit" in text
            assert all(vm["running_at"] == ["contoso-west"] for vm in plan["vms"])
    assert plan["last_test_failover"]["id"] == test_op
    assert f"last successful test failover: {test_op}" in text


def test_status_of_a_half_done_failover_names_the_vms_that_differ() -> None:
    paused = run("run", "--plan", DEMO_PLAN, "--kind", "planned", "--yes")
    assert paused.exit_code == EXIT_WAITING
    text, plan = status()
    assert plan["state"] == "mixed"
    assert "sql01: failed over, awaiting commit; app01, app02, web01: protected" in text
    assert "can run now: nothing new until the unfinished operations end" in text
    assert [u["id"] for u in plan["unfinished"]] == [op_id_in(paused.stdout)]
    assert run("status", "--plan", "nope").exit_code == EXIT_REFUSED


def test_plan_previews_every_kind_with_the_checksum_run_accepts() -> None:
    """Finding 9: prepare, commit, reverse, failback and cleanup could not be previewed, and the
    checksum a failback asks for could not be obtained from 'plan'."""

    def preview(kind: str) -> dict:
        shown = run("plan", "--plan", DEMO_PLAN, "--kind", kind)
        as_json = run("plan", "--plan", DEMO_PLAN, "--kind", kind, "--json")
        assert shown.exit_code == as_json.exit_code == EXIT_OK, shown.output
        body = json.loads(as_json.stdout)
        assert f"checksum {body['operation']['checksum']}" in shown.stdout
        return body

    prepare = preview("prepare")
    assert [s["name"] for s in prepare["operation"]["steps"]] == ["reserve"]
    finish(run("run", "--plan", DEMO_PLAN, "--kind", "prepare", "--yes", "--checksum", prepare["checksum"]))
    finish(run("run", "--plan", DEMO_PLAN, "--kind", "test"))
    cleanup = preview("cleanup")
    assert cleanup["operation"]["follows"]["kind"] == "test_failover"
    finish(run("run", "--plan", DEMO_PLAN, "--kind", "cleanup", "--checksum", cleanup["checksum"]))
    finish(run("run", "--plan", DEMO_PLAN, "--kind", "planned", "--yes"))
    commit = preview("commit")
    assert commit["operation"]["steps"][0]["items"] == ["sql01", "app01"]
    finish(run("run", "--plan", DEMO_PLAN, "--kind", "commit", "--yes", "--checksum", commit["checksum"]))
    reverse = preview("reverse")
    finish(run("run", "--plan", DEMO_PLAN, "--kind", "reverse", "--yes", "--checksum", reverse["checksum"]))

    failback = preview("failback")
    assert not any(n.startswith("refused now") for n in failback["notes"])
    assert (failback["source_site"], failback["target_site"]) == ("contoso-west", "contoso-east")
    ran = run("run", "--plan", DEMO_PLAN, "--kind", "failback", "--yes", "--checksum", failback["checksum"])
    assert ran.exit_code == EXIT_WAITING, ran.output
    assert ops_json()[0]["kind"] == "failback"


def test_a_preview_says_when_its_kind_is_refused_now() -> None:
    finish(run("run", "--plan", DEMO_PLAN, "--kind", "test"))
    shown = run("plan", "--plan", DEMO_PLAN, "--kind", "planned")
    assert shown.exit_code == EXIT_OK
    assert "refused now: a planned failover of plan contoso-apps cannot start" in shown.stdout
    assert "--kind cleanup" in shown.stdout
    nothing = run("plan", "--plan", DEMO_PLAN, "--kind", "commit")
    assert nothing.exit_code == EXIT_REFUSED and "a failover comes first" in nothing.stderr


@pytest.mark.parametrize("kind", ["commit", "reverse"])
def test_commit_and_reverse_show_what_they_change_and_ask_first(monkeypatch, kind: str) -> None:
    finish(run("run", "--plan", DEMO_PLAN, "--kind", "planned", "--yes"))
    if kind == "reverse":
        finish(run("run", "--plan", DEMO_PLAN, "--kind", "commit", "--yes"))
    before, ops = snapshot(), ops_json()

    blind = run("run", "--plan", DEMO_PLAN, "--kind", kind)
    assert blind.exit_code == EXIT_REFUSED and "needs a confirmation" in blind.stderr
    assert f"{kind} of plan {DEMO_PLAN}: " in blind.stdout and "steps (" in blind.stdout
    monkeypatch.setattr(session, "is_interactive", lambda: True)
    declined = run("run", "--plan", DEMO_PLAN, "--kind", kind, input="n\n")
    assert declined.exit_code == EXIT_REFUSED and "not confirmed" in declined.stderr
    assert snapshot() == before and ops_json() == ops, "nothing changed, nothing recorded"

    done = run("run", "--plan", DEMO_PLAN, "--kind", kind, input="y\n")
    assert done.exit_code == EXIT_OK, done.output
    assert kind in [o["kind"] for o in ops_json()[:2]]  # a reverse is followed by its prepare


def test_with_json_nobody_is_asked_and_the_refusal_says_how_to_review() -> None:
    op = op_id_in(run("run", "--plan", DEMO_PLAN, "--kind", "planned", "--yes").stdout)
    cancel = run("ops", "cancel", op, "--json")
    assert cancel.exit_code == EXIT_REFUSED and "without --json" in cancel.stderr
    assert json.loads(cancel.stdout)["error"]["code"] == "not_confirmed"
    assert run("ops", "resume", op).exit_code == EXIT_OK
    commit = run("run", "--plan", DEMO_PLAN, "--kind", "commit", "--json")
    assert commit.exit_code == EXIT_REFUSED and "failover-agent plan --kind commit" in commit.stderr
    assert json.loads(commit.stdout)["error"]["code"] == "not_confirmed"


def test_cancelling_a_failover_shows_what_it_undoes_and_asks_first(monkeypatch) -> None:
    paused = run("run", "--plan", DEMO_PLAN, "--kind", "planned", "--yes")
    op = op_id_in(paused.stdout)
    before = snapshot()

    blind = run("ops", "cancel", op)
    assert blind.exit_code == EXIT_REFUSED and "needs a confirmation" in blind.stderr
    assert f"undoes planned_failover {op}" in blind.stdout and "cancel/cancel-failover/hv-west-01" in blind.stdout
    assert snapshot() == before and ops_json()[0]["status"] == "waiting_for_manual_action"

    monkeypatch.setattr(session, "is_interactive", lambda: True)
    assert run("ops", "cancel", op, input="n\n").exit_code == EXIT_REFUSED
    assert snapshot() == before
    cancelled = run("ops", "cancel", op, "--yes")
    assert cancelled.exit_code == EXIT_OK, cancelled.output
    assert f"cancelled: planned_failover {op}" in cancelled.stdout


def powered(site: str) -> dict[str, str]:
    from agent.configfile import load_config
    from agent.wiring import connect

    with connect(load_config(None)) as connection:
        return {v.name: v.power_state.value for v in connection.ports.vmm[site].read_inventory().vms
                if v.role != "test"}


def test_ops_show_after_a_failover_stopped_on_an_error_names_the_vms_done_and_those_down() -> None:
    """Finding 12: 'ops show' listed no VM as done though sql01 ran at the recovery site, and did
    not show app01 -- healthy, but shut down at the primary and not started at the recovery site."""
    from tests.unit.test_cli_ops import world

    world().inject({"call": "hyperv.replicate.failover", "target": "app02", "fault": "permanent"})
    op = op_id_in(run("run", "--plan", DEMO_PLAN, "--kind", "planned", "--yes").stdout)
    assert run("ops", "resume", op).exit_code == EXIT_FAILED
    east, west = powered("contoso-east"), powered("contoso-west")
    assert (east["sql01"], west["sql01"]) == ("Off", "Running")
    assert east["app01"] == west["app01"] == east["app02"] == west["app02"] == "Off"

    shown = run("ops", "show", op)
    assert shown.exit_code == EXIT_OK, shown.output
    assert "VMs done:    sql01 (running at contoso-west)\n" in shown.stdout
    assert "VMs failed:  app02\n" in shown.stdout
    assert "app01       failed over, awaiting commit    off at both sites" in shown.stdout
    assert "DOWN:        app01, app02 powered off at both sites" in shown.stdout
    text, _ = status()
    assert "POWERED OFF AT BOTH SITES: app01, app02" in text
    now = json.loads(run("ops", "show", op, "--json").stdout)["vms_now"]
    assert (now["done"], now["off_everywhere"], now["sites_read"]) == (["sql01"], ["app01", "app02"], True)

    world().inject({"call": "vmm.read_inventory", "target": "contoso-east", "fault": "permanent"})
    blind = run("ops", "show", op)
    assert blind.exit_code == EXIT_OK, "what the journal holds is shown whatever the sites answer"
    assert "VMs done:    sql01 (as the journal says; the sites were not all read: " in blind.stdout
