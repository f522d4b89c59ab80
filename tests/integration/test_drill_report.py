"""The drill report of operations run on the simulated demo sites: what an auditor reads after a
drill -- each VM's addresses before and after, every DNS record and route change, the step
timeline with the achieved recovery time, errors of a failed run, notes, who confirmed the manual
step, the cleanup that followed -- in the HTML page and in the CSV; and names, notes and script
output that try to be markup stay text."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from agent.engine.model import OperationKind, OpStatus
from agent.errors import NotFoundError
from agent.report import CSV_COLUMNS, DrillReport, build_report, render_csv, render_html
from agent.report.facts import PLAN_WIDE, _recovery
from agent.report.render import duration
from tests.rigs import ACTOR, CONFIG_DIR, Rig, Templates, copy_demo

MANUAL = "Check that SQL Server on sql01"


class Text(HTMLParser):
    """The page as a browser shows it: text outside tags, and every tag name met."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str | None]] = []

    _BLOCKS = frozenset({"td", "th", "tr", "p", "li", "br", "h1", "h2", "h3", "pre", "section", "div"})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs += attrs
        if tag in self._BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if self.lasttag != "style":
            self.parts.append(data)

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", "".join(self.parts))


def page(html: str) -> Text:
    parsed = Text()
    parsed.feed(html)
    return parsed


def csv_rows(report: DrillReport) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(render_csv(report), newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return list(reader)


def drill(rig: Rig) -> tuple[str, str]:
    """A test failover (its manual step confirmed by ACTOR, a note added) and its cleanup."""
    test = rig.start(OperationKind.TEST_FAILOVER)
    rig.engine.journal.add_note(test.id, "carol@audit", "app health page checked from the drill network")
    cleanup = rig.start(OperationKind.CLEANUP_TEST)
    assert (test.status, cleanup.status) == (OpStatus.SUCCEEDED.value, OpStatus.SUCCEEDED.value)
    return test.id, cleanup.id


# ----------------------------------------------------------------------- test failover


def test_a_drill_report_shows_addresses_dns_timeline_confirmation_notes_and_the_cleanup(new_rig) -> None:
    rig = new_rig()
    test_id, cleanup_id = drill(rig)
    report = build_report(rig.store, test_id)

    # Addresses: each VM's source address and the test address VMM granted.
    got = {(a.vm, a.nic, a.ip_configuration): (a.purpose, a.before, a.granted) for a in report.addresses}
    assert got == {("sql01", "nic0", 0): ("test", "192.168.1.20", "192.168.1.201"),
                   ("sql01", "nic0", 1): ("test", "192.168.1.21", "192.168.1.202"),
                   ("app01", "nic0", 0): ("test", "192.168.2.10", "172.16.1.10"),
                   ("app02", "nic0", 0): ("test", "192.168.2.11", "172.16.1.11"),
                   ("web01", "nic0", 0): ("test", "192.168.1.30", "192.168.1.203")}

    # The timeline: every journalled step, in order, under its group; the groups in plan order.
    journalled = rig.engine.journal.steps(test_id)
    assert [s.name for s in report.steps] == [s.name for s in journalled]
    assert [g.name for g in report.groups] == [PLAN_WIDE, "databases", "applications", "web"]
    assert [g.vms for g in report.groups[1:]] == [["sql01"], ["app01", "app02"], ["web01"]]

    # Recovery time: from the operation's start to the end of the last group's last step.
    op = rig.engine.journal.operation(test_id)
    last = max(s.finished_at for s in journalled if s.group_name == "web")
    assert report.recovery_time_s == pytest.approx((last - op.created_at).total_seconds())
    assert report.recovery_note == ""
    per_group = [g.recovery_time_s for g in report.groups[1:]]
    assert per_group == sorted(per_group) and per_group[-1] == report.recovery_time_s
    manual = next(s for s in journalled if s.action == "manual")
    assert report.manual_wait_s == pytest.approx((manual.finished_at - manual.started_at).total_seconds())

    # Who confirmed the manual step, and the note.
    [confirmed] = report.confirmations
    assert (confirmed.confirmed_by, confirmed.instruction.startswith(MANUAL)) == (ACTOR, True)
    assert [(n.author, n.text) for n in report.notes] == [
        ("carol@audit", "app health page checked from the drill network")]

    # The cleanup follows it up, with the DNS it put back.
    [follow] = report.follow_ups
    assert (follow.id, follow.kind, follow.status) == (cleanup_id, "cleanup_test", "succeeded")
    restored = {c.target: (c.before, c.after) for c in follow.changes if c.action == "dns.apply"}
    assert restored["dns-drill/sql01.corp.contoso.example./A"] == (
        {"values": ["192.168.1.201", "192.168.1.202"], "ttl": 60}, {"values": ["192.168.1.20"], "ttl": 3600})

    text = page(render_html(report)).text
    for shown in (test_id, cleanup_id, "test failover of plan contoso-apps", "succeeded",
                  "192.168.2.10", "172.16.1.10", "192.168.1.201", "databases/after/0/manual", MANUAL, ACTOR,
                  "carol@audit: app health page checked from the drill network", duration(report.recovery_time_s),
                  "sql01.corp.contoso.example./A", "192.168.1.201, 192.168.1.202 (TTL 60)",
                  "192.168.1.20 (TTL 3600)", "Achieved recovery time: from the operation's start"):
        assert shown in text, shown
    assert "this test failover has not been cleaned up" not in text

    # The cleanup's own report points back at the drill; it brings nothing up.
    back = build_report(rig.store, cleanup_id)
    assert back.parent_id == test_id and back.recovery_time_s is None
    assert back.recovery_note == "not applicable: a cleanup_test brings no VM up at the recovery site"
    assert f"/v1/operations/{test_id}/report" in render_html(back, link=lambda i: f"/v1/operations/{i}/report")


def test_a_test_failover_not_cleaned_up_says_so(new_rig) -> None:
    rig = new_rig()
    test = rig.start(OperationKind.TEST_FAILOVER)
    report = build_report(rig.store, test.id)
    assert report.follow_ups == []
    assert "None: this test failover has not been cleaned up." in page(render_html(report)).text


# ------------------------------------------------------------------ planned failover


def test_a_planned_failover_report_shows_dns_routes_scripts_and_the_commit(new_rig) -> None:
    rig = new_rig()
    failover = rig.start(OperationKind.PLANNED_FAILOVER)
    commit = rig.start(OperationKind.COMMIT)
    report = build_report(rig.store, failover.id)

    changes = {(c.action, c.target): c for c in report.changes}
    a_record = changes[("dns.apply", "dns-contoso/app01.corp.contoso.example./A")]
    assert (a_record.category, a_record.before, a_record.after) == (
        "DNS record", {"values": ["192.168.2.10"], "ttl": 3600}, {"values": ["172.16.1.10"], "ttl": 60})
    assert changes[("routes.withdraw", "rtr-east/192.168.1.0/24")].before == ["via 10.10.0.1 metric 256"]
    assert changes[("routes.announce", "rtr-west/192.168.1.0/24")].after == ["via 10.20.0.1 metric 256"]
    assert {c.category for c in report.changes} >= {
        "IP reservation", "NIC connection", "failover IP", "replication", "power", "DNS record", "route", "script"}
    # Every change of the audit trail, once.
    assert len(report.changes) == sum(1 for a in rig.store.audit_trail(failover.id, limit=10_000) if a.key)

    [script] = report.scripts
    assert (script.host, script.path, script.succeeded) == ("hv-west-01", r"C:\DR\Test-AppHealth.ps1", True)
    assert "Url = http://app01.corp.contoso.example/health" in script.stdout

    assert [(f.id, f.kind) for f in report.follow_ups] == [(commit.id, "commit")]
    text = page(render_html(report)).text
    for shown in ("192.168.2.10 (TTL 3600)", "172.16.1.10 (TTL 60)", "via 10.10.0.1 metric 256", "absent",
                  "via 10.20.0.1 metric 256", "Url = http://app01.corp.contoso.example/health",
                  "Running", "Off", "FailedOverWaitingCompletion", "DHCP IP configurations are not managed",
                  "172.16.1.10 granted to app01/nic0"):
        assert shown in text, shown

    rows = csv_rows(report)
    by_record = Counter(r["record"] for r in rows)
    assert by_record["operation"] == 1 and by_record["step"] == len(report.steps)
    assert by_record["group"] == len(report.groups) and by_record["address"] == len(report.addresses) == 5
    assert by_record["change"] == len(report.changes) + sum(len(f.changes) for f in report.follow_ups)
    assert by_record["script"] == 1 and by_record["event"] == len(report.events)
    [op_row] = [r for r in rows if r["record"] == "operation"]
    assert float(op_row["recovery_time_s"]) == pytest.approx(report.recovery_time_s, abs=0.001)
    assert (op_row["status"], op_row["action"], op_row["target"]) == ("succeeded", "planned_failover", "contoso-apps")
    [dns_row] = [r for r in rows if r["record"] == "change" and r["target"] == a_record.target
                 and r["operation"] == failover.id]
    assert (dns_row["before"], dns_row["after"], dns_row["status"]) == (
        "192.168.2.10 (TTL 3600)", "172.16.1.10 (TTL 60)", "changed")
    assert {r["operation"] for r in rows if r["record"] == "change"} == {failover.id, commit.id}
    [app01] = [r for r in rows if r["record"] == "address" and r["vm"] == "app01"]
    assert (app01["before"], app01["after"], app01["action"], app01["target"]) == (
        "192.168.2.10", "172.16.1.10", "failover", "nic0#0")
    [manual] = [r for r in rows if r["record"] == "step" and r["action"] == "manual"]
    assert manual["actor"] == ACTOR

    # The commit's own report: no recovery time, and why.
    assert build_report(rig.store, commit.id).recovery_note.startswith("not applicable: a commit")


# ------------------------------------------------------------------------ a failed run


def test_a_failed_run_reports_its_errors_and_no_recovery_time(new_rig) -> None:
    rig = new_rig()
    rig.world.inject({"call": "hyperv.replicate.failover", "target": "app02", "fault": "permanent"})
    failover = rig.start(OperationKind.PLANNED_FAILOVER)
    assert failover.status == OpStatus.FAILED.value
    report = build_report(rig.store, failover.id)

    [error] = report.errors
    assert (error.step, error.code, error.vm) == ("applications/failover/hv-west-02", "injected_fault", "app02")
    assert report.recovery_time_s is None and report.recovery_note == "not achieved: the operation is failed"
    groups = {g.name: g for g in report.groups}
    assert groups["databases"].recovery_time_s is not None, "the group that came back has its time"
    assert (groups["applications"].status, groups["applications"].recovery_time_s) == ("failed", None)
    assert groups["web"].status == "pending", "its VMs were never failed over"
    # Only what changes no production VM may have run ahead for web (its reservation, NIC
    # connection and failover IP: agent/engine/operations.py): web01 was never stopped, prepared,
    # failed over or started, and the report says what became of its address either way.
    touched = {c.kind for c in rig.world.calls() if any(k.split("/")[0] == "web01" for k in c.changed)}
    assert touched <= {"vmm.grant_ips", "vmm.connect_nics", "hyperv.set_failover_configs"}, touched
    assert report.vms_failed == ["app02"]
    [web] = [a for a in report.addresses if a.vm == "web01"]
    if web.granted is None:  # said, not left blank
        assert web.problem == "not reserved: its step did not run"
    else:
        assert web.problem is None

    text = page(render_html(report)).text
    assert "hyperv.replicate.failover on hv-west-02: refused (injected by fault rule 0)" in text
    assert "not achieved: the operation is failed" in text and "injected_fault" in text
    [step_row] = [r for r in csv_rows(report) if r["record"] == "step" and r["status"] == "failed"]
    assert step_row["step"] == "applications/failover/hv-west-02" and step_row["error"].startswith("injected_fault: ")


def test_an_unplanned_failover_that_partly_succeeds_gives_the_time_of_the_vms_that_came_back(new_rig) -> None:
    rig = new_rig()
    rig.world.inject({"call": "hyperv.replicate.failover", "target": "app02", "fault": "permanent"})
    failover = rig.start(OperationKind.UNPLANNED_FAILOVER)
    assert failover.status == OpStatus.PARTIAL.value
    report = build_report(rig.store, failover.id)
    assert report.recovery_time_s is not None
    assert report.recovery_note == "covers the VMs that came back; these failed: app02"
    assert "app02" not in report.vms_done and "sql01" in report.vms_done


def test_recovery_time_is_not_given_when_no_step_of_the_plan_ran() -> None:
    assert _recovery("planned_failover", "succeeded", [], _now(), []) == (
        None, "not achieved: no step of the plan ran")


def _now():
    from agent.engine.store import utcnow

    return utcnow()


def test_an_unknown_operation_is_not_found(new_rig) -> None:
    rig = new_rig()
    with pytest.raises(NotFoundError, match="no operation op-000000000000"):
        build_report(rig.store, "op-000000000000")


# --------------------------------------------------------------------------- hostile


HOSTILE_VM = "<img src=x onerror=alert(1)>"
HOSTILE_URL = "</pre><script>alert(2)</script>"
HOSTILE_NOTE = "<script>alert(3)</script> \u202etxt.exe"
FORMULA_NOTE = "=HYPERLINK(\"http://evil.example\",\"click\")"


def hostile_templates(tmp_path: Path) -> Templates:
    """The demo with app02 renamed to markup (its DNS name kept), and a script parameter that
    tries to close the page's <pre> and open a <script>."""

    def edit(data: dict) -> None:
        for group in data["recovery_plans"][0]["groups"]:
            group["vms"] = [HOSTILE_VM if vm == "app02" else vm for vm in group["vms"]]
            for after in group.get("after", []):
                if "script" in after:
                    after["script"]["parameters"]["Url"] = HOSTILE_URL
        data["dns"].setdefault("hostnames", {})[HOSTILE_VM] = "app02.corp.contoso.example"

    inventory = yaml.safe_load((CONFIG_DIR / "demo-inventory.yaml").read_text())
    for site in inventory["sites"]:
        for vm in site.get("vms", []):
            if vm["name"] == "app02":
                vm["name"] = HOSTILE_VM
    return Templates.build(copy_demo(tmp_path / "hostile", edit=edit, inventory=yaml.safe_dump(inventory)))


def hostile_report(rig: Rig) -> DrillReport:
    failover = rig.start(OperationKind.PLANNED_FAILOVER)
    assert failover.status == OpStatus.SUCCEEDED.value, failover.errors
    rig.engine.journal.add_note(failover.id, "mallory", HOSTILE_NOTE)
    rig.engine.journal.add_note(failover.id, "mallory", FORMULA_NOTE)
    return build_report(rig.store, failover.id)


def test_hostile_names_notes_and_script_output_stay_text(new_rig, tmp_path: Path) -> None:
    rig = new_rig(templates=hostile_templates(tmp_path))
    report = hostile_report(rig)
    html = render_html(report)

    parsed = page(html)
    assert parsed.tags["script"] == 0 and parsed.tags["img"] == 0, "no markup of theirs became a tag"
    assert not any(name.startswith("on") for name, _ in parsed.attrs), "no event handler attribute"
    assert "<script" not in html.lower() and "<img" not in html.lower()
    # Shown as written, for the auditor to read.
    text = parsed.text
    assert HOSTILE_VM in text and HOSTILE_URL in text and "<script>alert(3)</script>" in text
    assert "\u202e" not in html and "\\u202etxt.exe" in text, "a bidi override is shown, not obeyed"
    # The page is self-contained: nothing is fetched from anywhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert parsed.tags["link"] == 0

    rows = csv_rows(report)
    notes = [r["after"] for r in rows if r["record"] == "note"]
    assert notes == [HOSTILE_NOTE, "'" + FORMULA_NOTE], "a formula is neutralised for spreadsheets"
    assert any(r["vm"] == HOSTILE_VM for r in rows if r["record"] == "address")
    [script] = [r for r in rows if r["record"] == "script"]
    assert HOSTILE_URL in script["after"]


def test_the_report_as_json_has_the_same_facts(new_rig) -> None:
    rig = new_rig()
    failover = rig.start(OperationKind.PLANNED_FAILOVER)
    facts = build_report(rig.store, failover.id).to_json()
    assert facts["id"] == failover.id and facts["status"] == "succeeded"
    assert isinstance(facts["created_at"], str) and facts["recovery_time_s"] > 0
    assert {a["vm"] for a in facts["addresses"]} == {"sql01", "app01", "app02", "web01"}


def test_an_address_vmm_refused_is_reported_with_the_reason(new_rig) -> None:
    rig = new_rig()
    rig.world.inject({"call": "vmm.grant_ips", "target": "west-apps-pool:172.16.1.11", "fault": "permanent"})
    failover = rig.start(OperationKind.UNPLANNED_FAILOVER)
    assert failover.status == OpStatus.PARTIAL.value
    report = build_report(rig.store, failover.id)
    [app02] = [a for a in report.addresses if a.vm == "app02"]
    assert app02.granted is None and app02.problem.startswith("not reserved: injected_fault: ")
    [refused] = [c for c in report.changes if c.action == "vmm.grant_ips" and c.result == "refused"]
    assert refused.error == "injected_fault"
    text = page(render_html(report)).text
    assert app02.problem in text and "refused (injected_fault)" in text


def test_the_report_reads_the_same_on_every_store(new_rig, store_demo: Templates) -> None:
    rig = new_rig(templates=store_demo)
    test_id, cleanup_id = drill(rig)
    report = build_report(rig.store, test_id)
    assert {(a.vm, a.granted) for a in report.addresses if a.ip_configuration == 0} == {
        ("sql01", "192.168.1.201"), ("app01", "172.16.1.10"), ("app02", "172.16.1.11"), ("web01", "192.168.1.203")}
    assert [f.id for f in report.follow_ups] == [cleanup_id]
    assert report.recovery_time_s is not None and report.confirmations[0].confirmed_by == ACTOR


def test_a_damaged_audit_entry_is_named_and_the_rest_reported(new_rig) -> None:
    from sqlalchemy import text

    rig = new_rig()
    failover = rig.start(OperationKind.PLANNED_FAILOVER)
    with rig.store.engine.begin() as connection:
        damaged = connection.execute(text(
            "SELECT id FROM audit WHERE operation_id = :op AND action = 'routes.announce' ORDER BY id LIMIT 1"),
            {"op": failover.id}).scalar_one()
        connection.execute(text("UPDATE audit SET details = '{not json' WHERE id = :id"), {"id": damaged})
    report = build_report(rig.store, failover.id)
    [bad] = report.unreadable
    assert f"audit row {damaged}, column details: cannot be read" in bad
    announced = [c for c in report.changes if c.action == "routes.announce"]
    assert len(announced) == 1, "the other announce is still there; the damaged one is left out, not guessed"
    assert bad in page(render_html(report)).text
