"""'failover-agent run' and 'failover-agent ops', run as a site admin would, on the simulated demo
sites: progress output, manual pauses, confirmation of real failovers, exit codes, and that what
the commands say matches what the simulated sites and the store hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

import agent.cli as cli
from agent.cli import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_WAITING, session
from agent.configfile import DEMO_PLAN, load_config
from agent.wiring import connect
from tests.rigs import run_cli as run
from tests.rigs import sim_of

if TYPE_CHECKING:
    from agent.wiring import SimulatedSites as SimWorld

REPO = Path(__file__).resolve().parents[2]
MANUAL = "Check that SQL Server on sql01"


pytestmark = pytest.mark.usefixtures("cli_env")




def operator_at_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "is_interactive", lambda: True)


def world(config: Path | None = None) -> SimWorld:
    loaded = load_config(config) if config else load_config(None)
    with connect(loaded) as connection:
        return sim_of(connection)


def snapshot() -> dict:
    return world().snapshot()


def op_id_in(output: str) -> str:
    for word in output.split():
        if word.startswith("op-") and len(word) == 15:
            return word
    raise AssertionError(f"no operation id in:\n{output}")


def ops_json(*args: str) -> list[dict]:
    result = run("ops", "list", "--json", *args)
    assert result.exit_code == EXIT_OK, result.output
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- run


def test_a_test_failover_then_its_cleanup_leave_the_sites_as_before(monkeypatch) -> None:
    operator_at_terminal(monkeypatch)
    before = snapshot()

    test = run("run", "--plan", DEMO_PLAN, "--kind", "test", input="y\n")
    assert test.exit_code == EXIT_OK, test.output
    out = test.stdout
    assert "plan: test failover of plan contoso-apps" in out and "checksum sha256:" in out
    assert "test_failover of plan contoso-apps: contoso-east -> contoso-west, 23 steps" in out
    # a line per step, the manual pause with its instruction and the question, then the end
    assert " 1/23 ok       create-test-networks" in out
    assert "23/23 ok" in out
    assert "paused for a manual action" in out and MANUAL in out and "Done? [y/N]" in out
    assert "succeeded: test_failover" in out and "VMs: sql01, app01, app02, web01" in out
    assert "--kind cleanup" in out  # what to do next
    during = snapshot()
    assert during != before

    cleanup = run("run", "--plan", DEMO_PLAN, "--kind", "cleanup")
    assert cleanup.exit_code == EXIT_OK, cleanup.output
    assert "succeeded: cleanup_test" in cleanup.stdout
    assert snapshot() == before

    kinds = [(o["kind"], o["status"]) for o in ops_json()]
    assert kinds == [("cleanup_test", "succeeded"), ("test_failover", "succeeded")]


def test_a_manual_pause_without_a_terminal_exits_4_and_ops_resume_continues() -> None:
    paused = run("run", "--plan", DEMO_PLAN, "--kind", "test_failover")
    assert paused.exit_code == EXIT_WAITING, paused.output
    op = op_id_in(paused.stdout)
    assert MANUAL in paused.stdout and "Done?" not in paused.stdout  # nobody to ask
    assert f"failover-agent ops resume {op}" in paused.stdout

    [listed] = ops_json("--status", "waiting")
    assert listed["id"] == op and listed["status"] == "waiting_for_manual_action" and 0 < listed["percent"] < 100

    resumed = run("ops", "resume", op[:8])  # a unique beginning of the id is enough
    assert resumed.exit_code == EXIT_OK, resumed.output
    assert "marking the manual step done" in resumed.stdout
    assert "succeeded: test_failover" in resumed.stdout
    assert ops_json()[0]["status"] == "succeeded"
    audit = run("ops", "audit", op)
    assert "operation.manual_step_done" in audit.stdout and "operation.succeeded" in audit.stdout


def test_answering_no_at_the_pause_exits_4_then_ops_resume_finishes(monkeypatch) -> None:
    operator_at_terminal(monkeypatch)
    paused = run("run", "--plan", DEMO_PLAN, "--kind", "test", input="n\n")
    assert paused.exit_code == EXIT_WAITING, paused.output
    assert "Done? [y/N]" in paused.stdout and "paused:" in paused.stdout
    op = op_id_in(paused.stdout)
    resumed = run("ops", "resume", op)
    assert resumed.exit_code == EXIT_OK, resumed.output
    assert ops_json()[0]["status"] == "succeeded"
    again = run("ops", "resume", op)
    assert again.exit_code == EXIT_REFUSED and "is succeeded; it cannot run again" in again.stderr


def test_a_failed_step_exits_1_naming_the_vm_and_resume_starts_it_again(monkeypatch) -> None:
    operator_at_terminal(monkeypatch)
    run("validate")  # seeds the simulated sites
    world().inject({"call": "hyperv.replicate.start_test", "target": "app02", "fault": "permanent"})

    failed = run("run", "--plan", DEMO_PLAN, "--kind", "test", input="y\n")
    assert failed.exit_code == EXIT_FAILED, failed.output
    out = failed.stdout
    assert "FAILED   applications/start-test/hv-west-02" in out
    assert "app02: injected_fault at hv-west-02" in out  # the error's code and target
    assert "failed: test_failover" in out and "VMs that failed: app02" in out
    op = op_id_in(out)
    assert f"ops resume {op}" in out and f"ops cancel {op}" in out

    shown = run("ops", "show", op)
    assert "errors (1)" in shown.stdout and "injected_fault at hv-west-02" in shown.stdout
    assert "VMs failed:  app02" in shown.stdout

    world().clear_faults()
    again = run("ops", "resume", op)
    assert again.exit_code == EXIT_OK, again.output
    assert "(attempt 2)" in again.stdout  # the failed step ran again; the others were not repeated


def test_an_unreachable_host_exits_3(tmp_path: Path) -> None:
    config = demo_copy(tmp_path, lambda d: d.setdefault("policies", {}).update(retry={"attempts": 1}))
    assert run("validate", "--config", str(config)).exit_code == EXIT_OK
    world(config).inject({"call": "hyperv.replicate.start_test", "target": "hv-west-01", "fault": "transient"})
    result = run("run", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "test")
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    assert "unreachable at hv-west-01" in result.stdout
    # the hints carry the same --config, and the store lives in that config's data_dir
    assert f"--config {config}" in result.stdout
    assert (tmp_path / "var" / "agent.sqlite").is_file()


def test_unfinished_operations_are_resumed_first() -> None:
    from agent.engine.model import OperationKind
    from agent.engine.service import Engine
    from agent.engine.store import Store

    loaded = load_config(None)
    with connect(loaded) as connection:
        store = Store.for_path(loaded.data_dir / "agent.sqlite")
        left = Engine(loaded.config, connection.ports, store).create(OperationKind.PREPARE, DEMO_PLAN)
        store.close()

    result = run("run", "--plan", DEMO_PLAN, "--kind", "prepare")
    assert result.exit_code == EXIT_OK, result.output
    assert "Resuming 1 unfinished operation found in the store first" in result.stdout
    assert f"{left} prepare of plan contoso-apps (pending)" in result.stdout
    assert [o["status"] for o in ops_json()] == ["succeeded", "succeeded"]


def expiries(make_due: bool = False) -> list[str]:
    """The test-failover expiries in the store of 'run' on the demo config (optionally made due)."""
    import datetime

    from agent.engine.store import Store
    from agent.scheduler import Scheduler

    store = Store.for_path(load_config(None).data_dir / "agent.sqlite")
    scheduler = Scheduler(store)
    scheduler.start(None, paused=True)
    try:
        due = scheduler.due()
        now = datetime.datetime.now(datetime.UTC)
        for op, when in due:
            assert when - now > datetime.timedelta(days=13)  # policies.test_failover_max_age: 14 days
            if make_due:
                scheduler.schedule_expiry(op, now - datetime.timedelta(minutes=1))
        return [op for op, _ in due]
    finally:
        scheduler.shutdown()
        store.close()


def test_a_test_failover_gets_its_expiry_and_a_due_one_is_cleaned_up_first() -> None:
    before = snapshot()
    op = op_id_in(run("run", "--plan", DEMO_PLAN, "--kind", "test").stdout)  # left paused
    assert expiries(make_due=True) == [op]

    result = run("run", "--plan", DEMO_PLAN, "--kind", "prepare")
    assert result.exit_code == EXIT_OK, result.output
    out = result.stdout
    assert f"Test failover {op} is past its maximum age (14 days): cleaning it up by force first." in out
    assert "cleanup_test: succeeded" in out
    assert out.index("cleanup_test: succeeded") < out.index("succeeded: prepare")  # before its own work
    assert expiries() == []
    statuses = {o["kind"]: o["status"] for o in ops_json()}
    assert statuses == {"test_failover": "cancelled", "cleanup_test": "succeeded", "prepare": "succeeded"}
    after = snapshot()
    # the prepare's reservations are new; everything the test failover did is gone
    assert {k: v for k, v in after.items() if k != "grants"} == {k: v for k, v in before.items() if k != "grants"}


def test_json_output_is_the_operation_and_nothing_else() -> None:
    result = run("run", "--plan", DEMO_PLAN, "--kind", "test", "--json")
    assert result.exit_code == EXIT_WAITING, result.output
    body = json.loads(result.stdout)
    assert body["kind"] == "test_failover" and body["status"] == "waiting_for_manual_action"
    assert body["waiting_for"].startswith(MANUAL) and len(body["steps"]) == 23
    shown = json.loads(run("ops", "show", body["id"], "--json").stdout)
    assert shown["id"] == body["id"] and shown["plan_checksum"].startswith("sha256:")


def test_an_unknown_kind_is_refused() -> None:
    result = run("run", "--plan", DEMO_PLAN, "--kind", "drill")
    assert result.exit_code == EXIT_REFUSED
    assert "test_failover" in result.output  # the valid kinds are listed


# ------------------------------------------------------------ real failovers: confirm


def test_a_planned_failover_without_yes_and_without_a_terminal_is_refused() -> None:
    before = snapshot()
    result = run("run", "--plan", DEMO_PLAN, "--kind", "planned")
    assert result.exit_code == EXIT_REFUSED, result.output
    # The plan is shown (the preview is the default), then the refusal says how to go ahead.
    assert "planned failover of plan contoso-apps: contoso-east -> contoso-west" in result.stdout
    assert "needs a confirmation" in result.stderr and "--yes --checksum sha256:" in result.stderr
    assert ops_json() == [] and snapshot() == before


def test_a_planned_failover_asks_first_and_no_changes_nothing(monkeypatch) -> None:
    operator_at_terminal(monkeypatch)
    before = snapshot()
    result = run("run", "--plan", DEMO_PLAN, "--kind", "planned", input="n\n")
    assert result.exit_code == EXIT_REFUSED, result.output
    assert "Run this planned failover of contoso-apps now" in result.stdout
    assert "not confirmed" in result.stderr
    assert ops_json() == [] and snapshot() == before

    done = run("run", "--plan", DEMO_PLAN, "--kind", "planned", input="y\ny\n")
    assert done.exit_code == EXIT_OK, done.output
    assert "succeeded: planned_failover" in done.stdout and "--kind commit" in done.stdout


def test_checksum_pins_the_reviewed_plan() -> None:
    wrong = run("run", "--plan", DEMO_PLAN, "--kind", "planned", "--yes", "--checksum", "sha256:0000")
    assert wrong.exit_code == EXIT_REFUSED and "changed since it was reviewed" in wrong.stderr
    assert ops_json() == []

    reviewed = json.loads(run("plan", "--plan", DEMO_PLAN, "--kind", "planned", "--json").stdout)["checksum"]
    right = run("run", "--plan", DEMO_PLAN, "--kind", "planned", "--yes", "--checksum", reviewed)
    assert right.exit_code == EXIT_WAITING, right.output  # ran up to the manual pause
    assert ops_json()[0]["kind"] == "planned_failover"

    early = run("run", "--plan", DEMO_PLAN, "--kind", "commit", "--yes", "--checksum", reviewed)
    assert early.exit_code == EXIT_REFUSED and "is waiting_for_manual_action" in early.stderr
    assert run("ops", "resume", ops_json()[0]["id"]).exit_code == EXIT_OK

    # A commit executes the plan of the failover it follows: the checksum pins that one.
    other = run("run", "--plan", DEMO_PLAN, "--kind", "commit", "--yes", "--checksum", "sha256:0000")
    assert other.exit_code == EXIT_REFUSED and "changed since it was reviewed" in other.stderr
    shown = json.loads(run("plan", "--plan", DEMO_PLAN, "--kind", "commit", "--json").stdout)
    assert shown["operation"]["checksum"] == reviewed
    commit = run("run", "--plan", DEMO_PLAN, "--kind", "commit", "--yes", "--checksum", reviewed)
    assert commit.exit_code == EXIT_OK, commit.output


# ----------------------------------------------------------------------------- ops


def test_ops_list_and_show() -> None:
    empty = run("ops", "list")
    assert empty.exit_code == EXIT_OK and "no operations in the store" in empty.stdout
    op = op_id_in(run("run", "--plan", DEMO_PLAN, "--kind", "test").stdout)

    listed = run("ops", "list")
    assert listed.stdout.splitlines()[0].split() == [
        "OPERATION", "KIND", "PLAN", "STATUS", "DONE", "STARTED", "(UTC)", "ELAPSED", "FAILED", "VMS"]
    assert op in listed.stdout and "waiting_for_manual_action" in listed.stdout
    assert run("ops", "list", "--status", "succeeded").stdout.startswith("no succeeded operations")
    assert run("ops", "list", "--status", "bogus").exit_code == EXIT_REFUSED

    shown = run("ops", "show", op)
    assert shown.exit_code == EXIT_OK, shown.output
    out = shown.stdout
    assert f"operation:   {op} test_failover of plan contoso-apps" in out
    assert "status:      waiting_for_manual_action" in out
    assert "waiting for a manual action:" in out and MANUAL in out
    assert "#   STATUS   STEP" in out and "WAITING  databases/after/0/manual" in out
    assert "notes (0)" in out


def test_ops_note_is_shown_and_audited() -> None:
    op = op_id_in(run("run", "--plan", DEMO_PLAN, "--kind", "test").stdout)
    noted = run("ops", "note", op, "SQL checked by hand, databases online", "--author", "alice")
    assert noted.exit_code == EXIT_OK and f"note added to {op} by alice" in noted.stdout
    assert "alice: SQL checked by hand, databases online" in run("ops", "show", op).stdout
    trail = json.loads(run("ops", "audit", op, "--json").stdout)
    assert {"actor": "alice", "action": "operation.note"}.items() <= trail[-1].items()
    assert trail[0]["action"] == "operation.create.test_failover"
    everything = run("ops", "audit")
    assert everything.exit_code == EXIT_OK and "operation.note" in everything.stdout


def test_ops_cancel_undoes_a_test_failover() -> None:
    before = snapshot()
    op = op_id_in(run("run", "--plan", DEMO_PLAN, "--kind", "test").stdout)
    assert snapshot() != before
    cancelled = run("ops", "cancel", op)
    assert cancelled.exit_code == EXIT_OK, cancelled.output
    assert f"cancelled: test_failover {op}" in cancelled.stdout and "undone by op-" in cancelled.stdout
    assert snapshot() == before
    again = run("ops", "cancel", op)
    assert again.exit_code == EXIT_REFUSED and "already cancelled" in again.stderr


@pytest.mark.parametrize("command", [("show",), ("resume",), ("cancel",), ("note", "TEXT"), ("audit",)])
def test_an_unknown_operation_exits_2(command: tuple[str, ...]) -> None:
    result = run("ops", command[0], "op-000000000000", *command[1:])
    assert result.exit_code == EXIT_REFUSED, result.output
    assert "no operation 'op-000000000000'" in result.stderr and "ops list" in result.stderr


def test_a_busy_vm_is_refused_with_what_to_do() -> None:
    op = op_id_in(run("run", "--plan", DEMO_PLAN, "--kind", "test").stdout)  # paused, holds its VMs
    busy = run("run", "--plan", DEMO_PLAN, "--kind", "prepare")
    assert busy.exit_code == EXIT_REFUSED, busy.output
    assert f"ops resume {op}" in busy.stderr and f"ops cancel {op}" in busy.stderr


def test_a_cleanup_takes_over_a_paused_test_failover() -> None:
    before = snapshot()
    op = op_id_in(run("run", "--plan", DEMO_PLAN, "--kind", "test").stdout)
    cleanup = run("run", "--plan", DEMO_PLAN, "--kind", "cleanup")
    assert cleanup.exit_code == EXIT_OK, cleanup.output
    assert snapshot() == before
    assert {o["id"]: o["status"] for o in ops_json()}[op] == "cancelled"


# ---------------------------------------------------------------------------- demo


def test_the_demo_runs_a_test_failover_and_its_cleanup_and_the_sites_are_as_before(tmp_path: Path) -> None:
    result = run("demo")
    assert result.exit_code == EXIT_OK, result.output
    out = result.stdout
    assert "Run a test failover of contoso-apps on the simulated sites" in out
    assert "demo: answering the manual step" in out
    assert "succeeded: test_failover" in out and "succeeded: cleanup_test" in out
    verdict = "The simulated sites are back exactly as before the test failover"
    assert verdict in out and out.index(verdict) > out.index("succeeded: cleanup_test")
    assert (tmp_path / "data" / cli.DEMO_STORE_NAME).is_file()
    assert not (tmp_path / "data" / "agent.sqlite").exists()  # 'run' keeps its own history

    again = run("demo", "--reset")
    assert again.exit_code == EXIT_OK and verdict in again.stdout


def test_the_demo_cleans_up_a_test_failover_an_interrupted_demo_left() -> None:
    from agent.engine.model import OperationKind
    from agent.engine.service import Engine
    from agent.engine.store import Store

    assert run("demo").exit_code == EXIT_OK
    loaded = load_config(None)
    with connect(loaded) as connection:
        store = Store.for_path(loaded.data_dir / cli.DEMO_STORE_NAME)
        Engine(loaded.config, connection.ports, store, sleep=lambda s: None).start(OperationKind.TEST_FAILOVER,
                                                                                  DEMO_PLAN)
        store.close()
    result = run("demo")
    assert result.exit_code == EXIT_OK, result.output
    assert "An earlier demo left test failover op-" in result.stdout
    assert "back exactly as before" in result.stdout


# ---------------------------------------------------------------------------- help


def test_help_documents_the_exit_codes_and_the_kinds() -> None:
    for args in (("--help",), ("run", "--help"), ("ops", "--help"), ("ops", "resume", "--help")):
        result = run(*args)
        assert "4 the operation is paused" in " ".join(result.stdout.split()), args
    text = " ".join(run("run", "--help").stdout.split())
    for kind in cli.OPERATION_KINDS:
        assert kind in text


def test_the_run_kinds_are_the_engines() -> None:
    from agent.engine.model import OperationKind

    assert set(cli.OPERATION_KINDS) == {k.value for k in OperationKind} - {"cancel"}


def demo_copy(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((REPO / "config" / "demo.yaml").read_text(encoding="utf-8"))
    edit(data)
    shutil.copy(REPO / "config" / "demo-inventory.yaml", tmp_path)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_ops_show_says_where_the_failover_did_otherwise_than_its_preview(tmp_path: Path) -> None:
    # The applications group starts with a manual step: nothing of it, its reservations
    # included, is done before the operator resumes it.
    def before_applications(data: dict) -> None:
        [group] = [g for p in data["recovery_plans"] if p["name"] == DEMO_PLAN for g in p["groups"]
                   if g["name"] == "applications"]
        group["before"] = [{"manual": {"instruction": "Tell the application owners, then resume."}}]

    config = str(demo_copy(tmp_path, before_applications))
    paused = run("run", "--config", config, "--plan", DEMO_PLAN, "--kind", "planned", "--yes")
    assert paused.exit_code == EXIT_WAITING, paused.output  # after the databases group
    op = op_id_in(paused.stdout)
    assert run("ops", "resume", "--config", config, op).exit_code == EXIT_WAITING  # before applications
    # Meanwhile app01's planned address goes to another NIC of the recovery site.
    from agent.ports import GrantRequest

    with connect(load_config(Path(config))) as connection:
        vmm = connection.ports.vmm["contoso-west"]
        [other] = [n.id for vm in vmm.read_inventory().vms if vm.name == "web01" for n in vm.nics if n.name == "nic1"]
        [taken] = vmm.grant_ips([GrantRequest(pool="west-apps-pool", address="172.16.1.10", owner_id=other)])
        assert taken.changed
    assert run("ops", "resume", "--config", config, op).exit_code == EXIT_OK

    shown = run("ops", "show", "--config", config, op)

    assert shown.exit_code == EXIT_OK, shown.output
    text = " ".join(shown.stdout.split())
    assert "differs from the preview (3)" in text
    assert "app01/nic0: planned 172.16.1.10, VMM granted 172.16.1.12 (the planned address was taken meanwhile)" in text
    assert "DNS dns-contoso/app01.corp.contoso.example./A: wrote ['172.16.1.12'], the preview said ['172.16.1.10']" \
        in text
    assert ("DNS dns-contoso/12.1.16.172.in-addr.arpa./PTR: wrote ['app01.corp.contoso.example.'] in place of "
            "10.1.16.172.in-addr.arpa.") in text
    shown_json = json.loads(run("ops", "show", "--config", config, op, "--json").stdout)
    assert {d["kind"] for d in shown_json["deviations"]} == {"grant", "dns"}
