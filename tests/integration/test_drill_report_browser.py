"""A drill report as an auditor opens it: the HTML file from ``failover-agent report``-style
rendering, opened from disk in headless Chromium. The page shows the recovery time and the VMs,
runs no script (a hostile VM name and script output included), fetches nothing, and a screenshot
of it is kept (``test-artifacts/drill-report.png``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.engine.model import OperationKind, OpStatus
from agent.report import build_report, render_html
from agent.report.render import duration
from tests.browser import artifact, chromium_page
from tests.integration.test_drill_report import HOSTILE_URL, HOSTILE_VM, hostile_report, hostile_templates

pytestmark = pytest.mark.chromium


def test_a_drill_report_opened_in_chromium_shows_its_facts_and_runs_nothing(new_rig, tmp_path: Path) -> None:
    rig = new_rig(templates=hostile_templates(tmp_path))
    test = rig.start(OperationKind.TEST_FAILOVER)
    cleanup = rig.start(OperationKind.CLEANUP_TEST)
    assert (test.status, cleanup.status) == (OpStatus.SUCCEEDED.value, OpStatus.SUCCEEDED.value)
    rig.engine.journal.add_note(test.id, "carol@audit", "drill checked")
    report = build_report(rig.store, test.id)
    assert report.recovery_time_s is not None
    page_file = tmp_path / "drill-report.html"
    page_file.write_text(render_html(report), encoding="utf-8")

    with chromium_page() as page:
        dialogs: list[str] = []
        fetched: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: fetched.append(r.url))
        page.goto(page_file.as_uri())

        assert page.title() == f"Drill report {test.id}: test_failover of contoso-apps"
        assert page.inner_text("#recovery-time") == duration(report.recovery_time_s)
        summary = page.inner_text("#summary")
        assert "succeeded" in summary and f"{cleanup.id} cleanup_test (succeeded)" in summary
        groups = page.inner_text("#groups")
        assert "sql01" in groups and HOSTILE_VM in groups, "the VM name is shown as text"
        assert HOSTILE_URL in page.inner_text("#scripts")
        assert "carol@audit" in page.inner_text("#notes")
        # A manual step's bar and the confirmation by the operator.
        assert page.locator(".bar-manual").count() == 1
        assert "alice@test" in page.inner_text("#confirmations")

        assert dialogs == [], "no script of the page's values ran"
        assert page.locator("script, img, iframe, object, embed").count() == 0
        assert fetched == [page_file.as_uri()], "the page loads nothing but itself"
        page.screenshot(path=str(artifact("drill-report.png")), full_page=True)


def test_the_hostile_planned_failover_report_runs_nothing_in_chromium(new_rig, tmp_path: Path) -> None:
    report = hostile_report(new_rig(templates=hostile_templates(tmp_path)))
    page_file = tmp_path / "hostile.html"
    page_file.write_text(render_html(report), encoding="utf-8")
    with chromium_page() as page:
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(page_file.as_uri())
        assert "<script>alert(3)</script>" in page.inner_text("#notes")
        assert dialogs == [] and page.locator("script, img").count() == 0


def test_the_page_s_own_policy_stops_a_script_even_if_one_got_in(tmp_path: Path) -> None:
    """Defence in depth: were a value ever rendered unescaped, the page's CSP still runs nothing."""
    report_html = render_html(_minimal_report())
    smuggled = report_html.replace("</footer>", "<script>alert('ran')</script></footer>")
    page_file = tmp_path / "smuggled.html"
    page_file.write_text(smuggled, encoding="utf-8")
    with chromium_page() as page:
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(page_file.as_uri())
        page.wait_for_timeout(200)
        assert page.locator("script").count() == 1 and dialogs == [], "the script is there, and blocked"


def _minimal_report():
    from datetime import UTC, datetime

    from agent.report import DrillReport

    at = datetime(2026, 1, 1, tzinfo=UTC)
    return DrillReport(
        id="op-000000000000", kind="test_failover", plan="p", status="succeeded", mode="full",
        error_policy="stop_at_first_error", source_site="a", target_site="b", requested_by="cli",
        plan_checksum=None, plan_summary=None, plan_notes=[], parent_id=None, created_at=at, finished_at=at,
        generated_at=at, elapsed_s=0.0, recovery_time_s=None, recovery_note="", manual_wait_s=0.0, vms_done=[],
        vms_failed=[], groups=[], addresses=[], changes=[], scripts=[], errors=[], events=[], notes=[],
        follow_ups=[])
