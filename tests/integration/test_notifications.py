"""Notifications end to end: operations of the demo run on the engine with a real notifier, and a
real webhook receiver and a real SMTP server (STARTTLS, AUTH) on 127.0.0.1 get each event once,
signed; a receiver that fails is retried, one that is dead or hangs delays no operation; and no
secret (the HMAC key, the SMTP password) appears in any log line written meanwhile."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent import scheduler as scheduler_module
from agent.confignotify import Notifications
from agent.engine.model import OperationKind, OpStatus
from agent.events import Event, FanOut, preflight_problems
from agent.logging import configure_logging
from agent.notify import Notifier, verify_webhook
from agent.preflight import Finding
from agent.scheduler import WARNING, Scheduler
from tests.receivers import Mailbox, closed_url, silent_listener, smtp_server, webhook_receiver
from tests.rigs import ACTOR, DEMO_PLAN, Rig, Templates, copy_demo, play_orchestrator

TEST = OperationKind.TEST_FAILOVER
CLEANUP = OperationKind.CLEANUP_TEST
PLANNED = OperationKind.PLANNED_FAILOVER
WAITING = OpStatus.WAITING.value

HMAC_SECRET = "hmac-7c1f0e3a9b5d-webhook-key"
SMTP_USER = "dr-notify"
SMTP_PASSWORD = "smtp-Pa55-e9d24b81"
SECRETS = (HMAC_SECRET, SMTP_PASSWORD,
           # ... and the password as AUTH PLAIN and AUTH LOGIN put it on the wire
           base64.b64encode(f"\0{SMTP_USER}\0{SMTP_PASSWORD}".encode()).decode(),
           base64.b64encode(SMTP_PASSWORD.encode()).decode())


@pytest.fixture(autouse=True)
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Every log line of the test, as the agent writes them (JSON); at the end, none may hold a
    secret."""
    monkeypatch.setenv("TEST_NOTIFY_HMAC", HMAC_SECRET)
    monkeypatch.setenv("TEST_NOTIFY_SMTP", SMTP_PASSWORD)
    stream = io.StringIO()
    configure_logging("debug", json=True, stream=stream)
    try:
        yield stream
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if getattr(handler, "_failover_agent", False):
                root.removeHandler(handler)
        structlog.reset_defaults()
    written = stream.getvalue()
    leaked = [s for s in SECRETS if s in written]
    assert not leaked, f"a secret reached the logs: {leaked}"


def config(*, url: str | None = None, smtp_port: int | None = None, ca: Path | None = None,
           events: list[str] | None = None, **delivery: Any) -> Notifications:
    data: dict[str, Any] = {"delivery": {"attempts": 3, "initial_backoff_s": 0.05, "max_backoff_s": 0.2, **delivery}}
    if url is not None:
        data["webhooks"] = [{"name": "dr-hook", "url": url, "secret": "env:TEST_NOTIFY_HMAC", "timeout_s": 5,
                             **({"events": events} if events else {})}]
    if smtp_port is not None:
        data["email"] = [{"name": "dr-team", "host": "127.0.0.1", "port": smtp_port, "security": "starttls",
                          "ca_file": str(ca), "username": SMTP_USER, "password": "env:TEST_NOTIFY_SMTP",
                          "sender": "failover-agent@dr.example", "recipients": ["oncall@dr.example", "dba@dr.example"],
                          **({"events": events} if events else {})}]
    return Notifications.model_validate(data)


def received(hook: Any) -> list[dict[str, Any]]:
    """The webhook's requests, each verified as a receiver must (signature, timestamp, replay)."""
    seen: set[str] = set()
    return [verify_webhook(HMAC_SECRET.encode(), r.body, r.headers, seen=seen) for r in hook.requests]


def with_notifier(rig: Rig, notifications: Notifications) -> Notifier:
    notifier = Notifier(notifications, agent=rig.config.agent.owner_id)
    rig.engine.events = notifier
    return notifier


def delivered(notifier: Notifier) -> None:
    assert notifier.drain(15), "every notification delivered"
    notifier.close()


# ---------------------------------------------------------------------- operations


def test_a_drill_and_its_cleanup_reach_the_webhook_and_the_mailbox_once_each(new_rig, tmp_path: Path) -> None:
    with webhook_receiver() as hook, smtp_server(tmp_path, username=SMTP_USER, password=SMTP_PASSWORD) as (box, ca):
        rig = new_rig()
        notifier = with_notifier(rig, config(url=hook.url, smtp_port=box.port, ca=ca))
        test = rig.engine.start(TEST, DEMO_PLAN)
        assert test.status == WAITING
        test = rig.engine.resume(test.id, actor=ACTOR)
        assert test.status == OpStatus.SUCCEEDED.value
        cleanup = rig.engine.start(CLEANUP, DEMO_PLAN, parent_id=test.id)
        assert cleanup.status == OpStatus.SUCCEEDED.value
        delivered(notifier)

        events = received(hook)
        assert [(e["kind"], e["operation_id"]) for e in events] == [
            ("operation.started", test.id), ("operation.paused", test.id), ("operation.succeeded", test.id),
            ("operation.started", cleanup.id), ("operation.succeeded", cleanup.id)]
        started, paused, succeeded = events[:3]
        assert started["status"] == "running" and started["details"] == {}
        assert paused["status"] == WAITING and paused["details"]["manual"] is True
        assert "SQL Server on sql01" in paused["details"]["instruction"]
        assert all(e["plan"] == DEMO_PLAN and e["agent"] == "failover-agent-demo" for e in events)
        assert {e["operation_kind"] for e in events[:3]} == {"test_failover"}
        assert sorted(succeeded["details"]["succeeded_vms"]) == ["app01", "app02", "sql01", "web01"]
        assert succeeded["details"]["failed_vms"] == [] and succeeded["details"]["error_count"] == 0
        assert hook.requests[0].path == "/hooks/failover?channel=dr", "the URL's path and query as configured"

        mails = box.wait_for(5)
        assert [m["X-FailoverAgent-Event"] for m in mails] == [e["id"] for e in events], "the same events, once"
        assert box.envelopes[0] == ("failover-agent@dr.example", ["oncall@dr.example", "dba@dr.example"])
        assert mails[1]["Subject"] == (f"[failover-agent-demo] test failover {test.id} of plan {DEMO_PLAN} paused, "
                                       "waiting for a manual action")
        assert "SQL Server on sql01" in mails[1].get_content()
        assert box.logins and all(ok for _, ok in box.logins), "logged in with the password, over STARTTLS"


@pytest.fixture(scope="module")
def network_only(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    def edit(cfg: dict[str, Any]) -> None:
        cfg["agent"]["mode"] = "network-only"
    return Templates.build(copy_demo(tmp_path_factory.mktemp("notify-network-only"), edit=edit))


def test_a_wait_resumed_that_goes_on_waiting_is_not_a_new_pause_and_the_next_step_is(
        new_rig, network_only: Templates) -> None:
    with webhook_receiver() as hook:
        rig = new_rig(templates=network_only)
        notifier = with_notifier(rig, config(url=hook.url))
        view = rig.engine.start(PLANNED, DEMO_PLAN)
        assert view.status == WAITING
        first_wait = view.waiting_for
        # The orchestrator has not failed sql01 over yet: resumed twice, and by a restarted agent,
        # the operation waits at the same step -- the same pause, told once.
        view = rig.engine.resume(view.id, actor=ACTOR)
        rig.restart()
        rig.engine.events = notifier
        view = rig.engine.resume(view.id, actor=ACTOR)
        assert view.status == WAITING and view.waiting_for == first_wait
        pauses = [first_wait]
        for _ in range(20):
            if view.status != WAITING:
                break
            step = next(s for s in view.steps if s.status == "waiting")
            if step.action == "hyperv.await_failover":
                play_orchestrator(rig.engine, rig.ports, view.id)
            view = rig.engine.resume(view.id, actor=ACTOR)
            if view.status == WAITING:
                pauses.append(view.waiting_for)
        assert view.status == OpStatus.SUCCEEDED.value
        delivered(notifier)

    events = received(hook)
    paused = [e for e in events if e["kind"] == "operation.paused"]
    assert [e["details"]["instruction"] for e in paused] == pauses
    assert len(pauses) >= 3, "the orchestrator's waits and the manual step"
    assert {e["details"]["manual"] for e in paused} == {True, False}
    assert [e["kind"] for e in events if e["kind"] != "operation.paused"] == ["operation.started",
                                                                              "operation.succeeded"]


def test_a_failed_failover_is_told_with_its_errors_and_its_new_start_says_so(new_rig) -> None:
    with webhook_receiver() as hook:
        rig = new_rig()
        notifier = with_notifier(rig, config(url=hook.url, events=["operation.started", "operation.failed",
                                                                   "operation.succeeded"]))
        rig.world.inject({"call": "hyperv.replicate.failover", "target": "app02", "fault": "permanent", "count": 1})
        view = rig.start(PLANNED)
        assert view.status == OpStatus.FAILED.value
        view = rig.through_pauses(rig.engine.resume(view.id, actor=ACTOR))
        assert view.status == OpStatus.SUCCEEDED.value
        delivered(notifier)

    events = received(hook)
    assert [e["kind"] for e in events] == ["operation.started", "operation.failed", "operation.started",
                                           "operation.succeeded"], "the pause is filtered out for this receiver"
    failed = events[1]
    assert failed["status"] == "failed" and failed["details"]["failed_vms"] == ["app02"]
    assert [(e["vm"], e["code"]) for e in failed["details"]["errors"]] == [("app02", "injected_fault")]
    assert events[2]["details"] == {"resumed_from": "failed"}


def test_a_partly_successful_cleanup_is_not_told_as_a_success(new_rig) -> None:
    with webhook_receiver() as hook:
        rig = new_rig()
        test = rig.start(TEST)
        notifier = with_notifier(rig, config(url=hook.url))
        rig.world.inject({"call": "vmm.delete_test_networks", "fault": "permanent", "count": 1})
        cleanup = rig.engine.start(CLEANUP, DEMO_PLAN, parent_id=test.id)
        assert cleanup.status == OpStatus.PARTIAL.value
        delivered(notifier)

    assert [e["kind"] for e in received(hook)] == ["operation.started", "operation.partially_succeeded"]
    assert received(hook)[1]["details"]["error_count"] >= 1


def test_a_sink_that_breaks_breaks_no_operation_and_keeps_no_event_from_the_others(new_rig, logs) -> None:
    class Broken:
        def emit(self, event: Event) -> None:
            raise RuntimeError("sink is broken")

    class Recorder:
        def __init__(self) -> None:
            self.kinds: list[str] = []

        def emit(self, event: Event) -> None:
            self.kinds.append(event.kind)

    rig = new_rig()
    recorder = Recorder()
    rig.engine.events = FanOut(Broken(), recorder)
    view = rig.start(TEST)
    assert view.status == OpStatus.SUCCEEDED.value
    assert recorder.kinds == ["operation.started", "operation.paused", "operation.succeeded"]
    broken = [json.loads(line) for line in logs.getvalue().splitlines() if "event not handed" in line]
    assert len(broken) == 3 and broken[0]["sink"] == "Broken" and broken[0]["error"] == "RuntimeError"

    rig.engine.events = Broken()
    assert rig.start(CLEANUP, parent_id=view.id).status == OpStatus.SUCCEEDED.value


# --------------------------------------------------------------------------- delivery


def test_a_receiver_that_fails_then_recovers_gets_the_event_once_accepted(logs) -> None:
    with webhook_receiver(answers=[500, 503]) as hook:
        notifier = Notifier(config(url=hook.url))
        event = Event(kind="operation.started", operation_id="op-1", plan="p", operation_kind="commit",
                      status="running")
        notifier.emit(event)
        delivered(notifier)

    assert [json.loads(r.body)["attempt"] for r in hook.requests] == [1, 2, 3]
    # Every attempt is signed anew, and the receiver keeps the first it accepted (the third).
    assert [verify_webhook(HMAC_SECRET.encode(), r.body, r.headers)["id"] for r in hook.requests] == [event.id] * 3
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert [line["reason"] for line in lines if line["event"] == "notification not delivered: trying again"] == [
        "HTTP 500", "HTTP 503"]
    assert any(line["event"] == "notification delivered" and line["attempts"] == 3 for line in lines)
    assert not any(hook.url.split("/")[3] in line for line in logs.getvalue().splitlines()), "no URL path logged"


def test_a_receiver_that_refuses_is_not_asked_again(logs) -> None:
    with webhook_receiver(answers=[400]) as hook:
        notifier = Notifier(config(url=hook.url))
        notifier.emit(Event(kind="operation.failed", operation_id="op-2"))
        delivered(notifier)
    assert len(hook.requests) == 1
    assert '"reason": "HTTP 400"' in logs.getvalue() and "not tried again" in logs.getvalue()


def test_a_dead_or_hung_receiver_delays_no_operation(new_rig, logs) -> None:
    with silent_listener() as hung:
        rig = new_rig()
        notifications = Notifications.model_validate({
            "webhooks": [{"name": "hung", "url": hung, "secret": "env:TEST_NOTIFY_HMAC", "timeout_s": 60},
                         {"name": "dead", "url": closed_url(), "secret": "env:TEST_NOTIFY_HMAC"}],
            "delivery": {"attempts": 2, "initial_backoff_s": 0.05}})
        notifier = with_notifier(rig, notifications)
        began = time.monotonic()
        view = rig.start(TEST)
        took = time.monotonic() - began
        assert view.status == OpStatus.SUCCEEDED.value
        assert took < 20, f"the drill took {took:.1f} s beside a receiver that answers after 60 s"
        assert notifier.drain(0.5) is False, "the hung receiver still holds its notifications"
        began = time.monotonic()
        notifier.close(timeout_s=0.5)
        assert time.monotonic() - began < 3, "shutdown does not wait for a hung receiver"
    text = logs.getvalue()
    gave_up = [json.loads(line) for line in text.splitlines() if '"notification not delivered: giving up"' in line]
    assert [line["target"] for line in gave_up] == ["dead"] * 3, "the dead receiver: each event given up"
    assert "ConnectionRefusedError" in text and "notifications not delivered before shutdown" in text


def test_events_beyond_the_queue_are_dropped_at_once_and_logged(logs) -> None:
    with silent_listener() as hung:
        notifier = Notifier(Notifications.model_validate({
            "webhooks": [{"name": "hung", "url": hung, "secret": "env:TEST_NOTIFY_HMAC", "timeout_s": 60}],
            "delivery": {"queue_size": 2}}))
        began = time.monotonic()
        for n in range(10):
            notifier.emit(Event(kind="operation.started", operation_id=f"op-{n}"))
        assert time.monotonic() - began < 0.5, "emit never waits"
        notifier.close(timeout_s=0.2)
    dropped = logs.getvalue().count("notification dropped")
    assert dropped in (7, 8), dropped  # 2 queued, and 1 taken by the worker unless it was not yet
    assert "after shutdown" not in logs.getvalue()
    notifier.emit(Event(kind="operation.started"))
    assert "notification after shutdown dropped" in logs.getvalue()


def test_a_wrong_smtp_password_or_an_unset_secret_is_given_up_and_logged_without_a_secret(
        tmp_path: Path, logs, monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_server(tmp_path, username=SMTP_USER, password="another-one") as (box, ca):
        notifier = Notifier(config(smtp_port=box.port, ca=ca, url=closed_url()))
        monkeypatch.delenv("TEST_NOTIFY_HMAC")
        notifier.emit(Event(kind="operation.succeeded", operation_id="op-3"))
        delivered(notifier)
    # One attempt (smtplib tries each mechanism the server offers: PLAIN, then LOGIN), none again.
    assert box.logins == [(SMTP_USER, False)] * 2 and box.messages == []
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    lines = [line for line in lines if line.get("target") in ("dr-team", "dr-hook")]  # not another test's worker
    assert not [line for line in lines if line["event"] == "notification not delivered: trying again"]
    refused = {line["target"]: line["reason"] for line in lines
               if line["event"] == "notification refused: not tried again"}
    assert refused == {"dr-team": "SMTP 535", "dr-hook": "environment variable TEST_NOTIFY_HMAC is not set"}


def test_an_smtp_server_whose_certificate_is_not_trusted_gets_no_password(tmp_path: Path, logs) -> None:
    with smtp_server(tmp_path, username=SMTP_USER, password=SMTP_PASSWORD) as (box, _ca):
        other = tmp_path / "other"
        other.mkdir()
        from tests.receivers import make_certificate
        untrusted, _ = make_certificate(other)
        notifier = Notifier(config(smtp_port=box.port, ca=untrusted))
        notifier.emit(Event(kind="operation.succeeded", operation_id="op-4"))
        delivered(notifier)
    assert box.logins == [] and box.messages == []
    assert "certificate is not trusted" in logs.getvalue()


def test_the_preflight_event_carries_its_problems(logs) -> None:
    finding = Finding(kind="dns", target="DNS server dns-contoso, zone corp.example.", key="dns.servers[0].tsig",
                      ok=False, detail="BADSIG", code="dns_refused", site="contoso-west")
    with webhook_receiver() as hook:
        notifier = Notifier(config(url=hook.url, events=["preflight.problems"]))
        notifier.emit(Event(kind="operation.started", operation_id="op-5"))  # not for this receiver
        notifier.emit(preflight_problems([finding], site="contoso-west"))
        delivered(notifier)
    [event] = received(hook)
    assert event["kind"] == "preflight.problems" and event["operation_id"] is None
    assert event["details"]["count"] == 1 and event["details"]["site"] == "contoso-west"
    assert event["details"]["problems"][0]["key"] == "dns.servers[0].tsig"
    with pytest.raises(ValueError):
        preflight_problems([])


def test_an_https_receiver_is_reached_with_its_ca_and_refused_without_it(tmp_path: Path, logs) -> None:
    from tests.receivers import make_certificate

    cert, key = make_certificate(tmp_path)
    with webhook_receiver(tls=(cert, key)) as hook:
        trusting = Notifier(Notifications.model_validate({"webhooks": [
            {"name": "tls-hook", "url": hook.url, "secret": "env:TEST_NOTIFY_HMAC", "ca_file": str(cert)}]}))
        trusting.emit(Event(kind="operation.succeeded", operation_id="op-7"))
        delivered(trusting)
        doubting = Notifier(Notifications.model_validate({"webhooks": [
            {"name": "tls-hook-2", "url": hook.url, "secret": "env:TEST_NOTIFY_HMAC"}]}))  # the system's CAs
        doubting.emit(Event(kind="operation.succeeded", operation_id="op-8"))
        delivered(doubting)
    assert [e["operation_id"] for e in received(hook)] == ["op-7"]
    assert "the receiver's certificate is not trusted" in logs.getvalue()


def mail_target(port: int, ca: Path | None, **fields: Any) -> Notifications:
    target = {"name": "dr-team", "host": "127.0.0.1", "port": port, "sender": "failover-agent@dr.example",
              "recipients": ["oncall@dr.example"], **({"ca_file": str(ca)} if ca else {}), **fields}
    return Notifications.model_validate({"email": [target], "delivery": {"attempts": 3, "initial_backoff_s": 0.05}})


# aiosmtpd warns of AUTH without STARTTLS: it does not count TLS from the first byte as TLS.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_mail_over_tls_from_the_first_byte(tmp_path: Path) -> None:
    with smtp_server(tmp_path, username=SMTP_USER, password=SMTP_PASSWORD, tls="implicit") as (box, ca):
        notifier = Notifier(mail_target(box.port, ca, security="ssl", username=SMTP_USER,
                                        password="env:TEST_NOTIFY_SMTP"))
        notifier.emit(Event(kind="operation.failed", operation_id="op-9"))
        delivered(notifier)
        [mail] = box.wait_for(1)
    assert box.logins[-1] == (SMTP_USER, True) and "op-9" in mail["Subject"]


def test_a_server_without_starttls_gets_nothing_when_starttls_is_asked(tmp_path: Path, logs) -> None:
    with smtp_server(tmp_path, username=SMTP_USER, password=SMTP_PASSWORD, tls="none") as (box, _ca):
        notifier = Notifier(mail_target(box.port, None))
        notifier.emit(Event(kind="operation.failed", operation_id="op-10"))
        delivered(notifier)
    assert box.messages == [] and "does not offer what the config asks" in logs.getvalue()
    assert "trying again" not in logs.getvalue()


@pytest.mark.parametrize(("mailbox", "delivered_after", "says"), [
    (Mailbox(data_replies=["451 4.3.0 try later"]), 1, '"reason": "SMTP 451"'),
    (Mailbox(rcpt_reply="450 4.2.1 mailbox busy"), 0, "recipients refused for now (SMTP 450)"),
    (Mailbox(rcpt_reply="550 5.1.1 no such user"), 0, "every recipient refused (SMTP 550)"),
])
def test_smtp_replies_say_whether_to_try_again(tmp_path: Path, logs, mailbox: Mailbox, delivered_after: int,
                                               says: str) -> None:
    with smtp_server(tmp_path, username=SMTP_USER, password=SMTP_PASSWORD, tls="none", mailbox=mailbox) as (box, _):
        notifier = Notifier(mail_target(box.port, None, security="none"))
        notifier.emit(Event(kind="operation.failed", operation_id="op-11"))
        delivered(notifier)
    assert len(box.messages) == delivered_after and says in logs.getvalue()
    retried = logs.getvalue().count("trying again")
    assert retried == (0 if "550" in says else 1 if delivered_after else 2)


def test_shutdown_cuts_a_backoff_short(logs) -> None:
    notifier = Notifier(Notifications.model_validate({
        "webhooks": [{"name": "dead", "url": closed_url(), "secret": "env:TEST_NOTIFY_HMAC"}],
        "delivery": {"attempts": 5, "initial_backoff_s": 60}}))
    notifier.emit(Event(kind="operation.started", operation_id="op-12"))
    deadline = time.monotonic() + 5
    while "trying again" not in logs.getvalue() and time.monotonic() < deadline:
        time.sleep(0.02)
    began = time.monotonic()
    notifier.close(timeout_s=0.2)
    assert time.monotonic() - began < 2
    assert "notification not delivered: shutting down" in logs.getvalue()


# ------------------------------------------------------------------------ expiry warning


def test_a_drill_nearing_its_maximum_age_is_told_once_and_its_cleanup_cancels_the_warning(new_rig, logs) -> None:
    with webhook_receiver() as hook:
        rig = new_rig()
        notifications = config(url=hook.url, events=["test_failover.expiring"])
        rig.engine.config = rig.config.model_copy(update={"notifications": notifications})
        notifier = with_notifier(rig, notifications)
        scheduler = Scheduler(rig.store)
        rig.engine.scheduler = scheduler
        scheduler.start(rig.engine, paused=True)  # jobs kept, none run by itself: the test fires them
        try:
            test = rig.start(TEST)
            [warning] = [j for j in scheduler._scheduler.get_jobs() if j.id == f"{WARNING}{test.id}"]
            [(_, expires)] = [(op, when) for op, when in scheduler.due() if op == test.id]
            assert expires - warning.next_run_time == timedelta(days=1)
            assert [op for op, _ in scheduler.due()] == [test.id], "the warning is not an expiry"

            scheduler._scheduler.remove_job(warning.id)  # as APScheduler does when it fires
            scheduler_module.run_expiry_warning(*warning.args)
            assert notifier.drain(10)
            [event] = received(hook)
            assert event["kind"] == "test_failover.expiring" and event["operation_id"] == test.id
            assert datetime.fromisoformat(event["details"]["expires_at"]) == expires

            # A second drill is cleaned up before its warning: the warning goes with the expiry.
            second_cleanup = rig.start(CLEANUP, parent_id=test.id)
            assert second_cleanup.status == OpStatus.SUCCEEDED.value
            again = rig.start(TEST)
            assert any(j.id == f"{WARNING}{again.id}" for j in scheduler._scheduler.get_jobs())
            [late] = [j for j in scheduler._scheduler.get_jobs() if j.id == f"{WARNING}{again.id}"]
            rig.start(CLEANUP, parent_id=again.id)
            assert not any(j.id.startswith(WARNING) for j in scheduler._scheduler.get_jobs())
            scheduler_module.run_expiry_warning(*late.args)  # had it fired anyway: nothing to tell
            # ... nor for one past its expiry time.
            scheduler_module.run_expiry_warning(test.id, (datetime.now(UTC) - timedelta(minutes=1)).isoformat())
            # ... nor for an operation the store does not know (logged, nothing raised into APScheduler).
            scheduler_module.run_expiry_warning("op-000000000000", expires.isoformat())
            assert "test failover expiry warning not sent" in logs.getvalue()
            delivered(notifier)
            assert [e["kind"] for e in received(hook)] == ["test_failover.expiring"]
        finally:
            scheduler.shutdown()


def test_no_warning_is_scheduled_when_no_receiver_wants_it(new_rig) -> None:
    rig = new_rig()
    scheduler = Scheduler(rig.store)
    rig.engine.scheduler = scheduler
    scheduler.start(rig.engine, paused=True)
    try:
        test = rig.start(TEST)
        assert [j.id for j in scheduler._scheduler.get_jobs()] == [f"test-expiry:{test.id}"]
        scheduler_module.run_expiry_warning(test.id, datetime.now(UTC).isoformat())  # no sink: nothing, no error
    finally:
        scheduler.shutdown()


def test_no_secret_reaches_the_logs_of_deliveries_that_use_them(tmp_path: Path, logs) -> None:
    """What the autouse check asserts after every test here, made explicit on the paths that
    handle a secret: an HMAC-signed delivery retried, and SMTP AUTH over STARTTLS."""
    with webhook_receiver(answers=[502]) as hook, \
            smtp_server(tmp_path, username=SMTP_USER, password=SMTP_PASSWORD) as (box, ca):
        notifier = Notifier(config(url=hook.url, smtp_port=box.port, ca=ca))
        notifier.emit(Event(kind="operation.paused", operation_id="op-6", details={"instruction": "check sql01"}))
        delivered(notifier)
        assert len(hook.requests) == 2 and len(box.wait_for(1)) == 1
    written = logs.getvalue()
    assert '"logger": "agent.notify"' in written and "mail.log" in written, "both sides' logs were captured"
    assert "AUTH PLAIN" in written, "the SMTP server logged the login (masked)"
    assert HMAC_SECRET not in written and SMTP_PASSWORD not in written


# ------------------------------------------------------------------------------- serve


def test_serve_notifies_what_it_runs_and_logs_no_secret(tmp_path: Path) -> None:
    """The real command: ``failover-agent serve`` resumes an operation left pending, and the
    webhook hears of its start and its manual pause once each; its log holds no secret."""
    import os
    import signal
    import subprocess
    import sys

    from agent.configfile import load_config
    from agent.engine.service import Engine
    from agent.engine.store import Store
    from agent.wiring import connect

    with webhook_receiver() as hook:
        def edit(data: dict[str, Any]) -> None:
            data["store"] = {"url": f"sqlite:///{tmp_path / 'agent.sqlite'}"}
            data["simulator"]["state"] = str(tmp_path / "sim-state.json")
            data["notifications"] = {"webhooks": [{"name": "dr-hook", "url": hook.url,
                                                   "secret": "env:TEST_NOTIFY_HMAC"}]}

        path = copy_demo(tmp_path / "cfg", edit=edit)
        loaded = load_config(path)
        conn = connect(loaded)
        store = Store.open(loaded.config.store.url or "")
        try:
            op_id = Engine(loaded.config, conn.ports, store).create(TEST, DEMO_PLAN)
        finally:
            store.close()
            conn.close()
        repo = str(Path(__file__).resolve().parents[2])  # this checkout's agent, whatever is installed
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TEST_NOTIFY_HMAC=HMAC_SECRET,
                   FAILOVER_AGENT_LOG_LEVEL="info",
                   PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
        agent = subprocess.Popen([sys.executable, "-m", "agent", "serve", "--port", "0", "--config", str(path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        try:
            requests = hook.wait_for(2, timeout_s=60)
        finally:
            agent.send_signal(signal.SIGTERM)
            _, stderr = agent.communicate(timeout=60)
        events = received(hook)
    assert [(e["kind"], e["operation_id"]) for e in events] == [("operation.started", op_id),
                                                                 ("operation.paused", op_id)], stderr
    assert len(requests) == 2 and agent.returncode == 0, stderr
    assert "notification delivered" in stderr, "the agent's own log, at info"
    assert not [s for s in SECRETS if s in stderr]
