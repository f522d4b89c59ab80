"""The ``notifications`` section: what a site admin writes is checked at load time, every bad
value refused with its key path and line, and secrets accepted only as references; plus the
pieces of delivery that need no receiver (signature, message, backoff, event summaries)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.configfile import load_config
from agent.confignotify import Delivery, Notifications
from agent.events import Event
from agent.notify import backoff_s, email_message, sign, verify_webhook, webhook_body
from agent.yamlfile import InvalidFileError
from tests.rigs import copy_demo

HOOK = {"name": "dr-hook", "url": "https://hooks.dr.example/failover", "secret": "env:HOOK_SECRET"}
MAIL = {"name": "dr-team", "host": "smtp.dr.example", "sender": "agent@dr.example", "recipients": ["ops@dr.example"]}


def load_with(tmp_path: Path, notifications: dict[str, Any]):
    def edit(cfg: dict[str, Any]) -> None:
        cfg["notifications"] = notifications
    return load_config(copy_demo(tmp_path / "cfg", edit=edit))


def test_a_full_section_loads_with_its_defaults(tmp_path: Path) -> None:
    loaded = load_with(tmp_path, {"webhooks": [HOOK], "email": [{**MAIL, "username": "agent",
                                                                 "password": "file:/etc/failover-agent/smtp"}]})
    n = loaded.config.notifications
    assert n.webhooks[0].events[0] == "operation.started" and len(n.webhooks[0].events) == 7, "all kinds"
    assert n.email[0].effective_port == 587 and n.email[0].security == "starttls"
    assert n.expiry_warning == timedelta(days=1) and n.delivery == Delivery()
    assert n.wants("operation.failed") and "file:/etc" in repr(n.email[0].password)


def test_without_the_section_nothing_is_notified(tmp_path: Path) -> None:
    n = load_with(tmp_path, {}).config.notifications
    assert n.webhooks == [] and n.email == [] and not n.wants("test_failover.expiring")


@pytest.mark.parametrize(("section", "key", "says"), [
    ({"webhooks": [{**HOOK, "url": "ftp://hooks.dr.example/x"}]}, "notifications.webhooks[0].url", "http:// or https://"),
    ({"webhooks": [{**HOOK, "url": "https://user:pw@hooks.dr.example/"}]}, "notifications.webhooks[0].url",
     "user name or password"),
    ({"webhooks": [{**HOOK, "url": "https:///nohost"}]}, "notifications.webhooks[0].url", "needs a host"),
    ({"webhooks": [{**HOOK, "url": "https://h.example:99999/"}]}, "notifications.webhooks[0].url", "bad port"),
    ({"webhooks": [{**HOOK, "url": "https://h.example/a b"}]}, "notifications.webhooks[0].url", "spaces"),
    ({"webhooks": [{**HOOK, "secret": "hunter2"}]}, "notifications.webhooks[0].secret", "plain-text secret"),
    ({"webhooks": [{**HOOK, "events": ["operation.exploded"]}]}, "notifications.webhooks[0].events[0]",
     "operation.started"),
    ({"webhooks": [{**HOOK, "events": []}]}, "notifications.webhooks[0].events", "must not be empty"),
    ({"email": [{**MAIL, "recipients": ["ops@dr.example\r\nBcc: evil@x.example"]}]},
     "notifications.email[0].recipients[0]", "not an e-mail address"),
    ({"email": [{**MAIL, "sender": "no-at-sign"}]}, "notifications.email[0].sender", "not an e-mail address"),
    ({"email": [{**MAIL, "recipients": []}]}, "notifications.email[0].recipients", "must not be empty"),
    ({"email": [{**MAIL, "username": "agent"}]}, "notifications.email[0]", "go together"),
    ({"email": [{**MAIL, "security": "none", "username": "a", "password": "env:P"}]}, "notifications.email[0]",
     "only over TLS"),
    ({"email": [{**MAIL, "security": "none", "ca_file": "ca.pem"}]}, "notifications.email[0]", "ca_file"),
    ({"email": [{**MAIL, "host": "smtp\nx"}]}, "notifications.email[0].host", "control characters"),
    ({"webhooks": [HOOK], "email": [{**MAIL, "name": "DR-HOOK"}]}, "notifications.email[0].name",
     "duplicate notification target name 'DR-HOOK' (also notifications.webhooks[0].name)"),
    ({"expiry_warning": "P0D"}, "notifications.expiry_warning", "more than 0"),
    ({"delivery": {"attempts": 0}}, "notifications.delivery.attempts", "greater than or equal to 1"),
    ({"webhooks": [{**HOOK, "token": "x"}]}, "notifications.webhooks[0].token", "unknown key"),
])
def test_a_bad_value_is_refused_naming_its_key(tmp_path: Path, section: dict[str, Any], key: str, says: str) -> None:
    with pytest.raises(InvalidFileError) as refused:
        load_with(tmp_path, section)
    [problem] = [str(p) for p in refused.value.problems]
    assert key in problem and says in problem, problem
    assert "hunter2" not in problem or "plain-text" in problem


def test_the_warning_comes_a_day_before_the_expiry_or_halfway_for_a_short_maximum_age() -> None:
    n = Notifications()
    created = datetime(2026, 1, 1, tzinfo=UTC)
    assert n.expiry_warning_at(created, created + timedelta(days=14)) == created + timedelta(days=13)
    assert n.expiry_warning_at(created, created + timedelta(hours=6)) == created + timedelta(hours=3)


def test_the_backoff_doubles_up_to_its_cap() -> None:
    policy = Delivery(initial_backoff_s=2, max_backoff_s=10)
    assert [backoff_s(policy, n) for n in (1, 2, 3, 4)] == [2, 4, 8, 10]


def test_a_receiver_refuses_a_forged_a_changed_a_stale_and_a_replayed_request() -> None:
    secret = b"k3y"
    event = Event(kind="operation.failed", operation_id="op-1", plan="p", details={"errors": []})
    body = webhook_body(event, agent="a", attempt=1, now=1000.0)
    headers = {"X-FailoverAgent-Signature": sign(secret, body), "X-FailoverAgent-Timestamp": "1000"}
    seen: set[str] = set()
    assert verify_webhook(secret, body, headers, now=1010, seen=seen)["id"] == event.id
    with pytest.raises(ValueError, match="already handled"):
        verify_webhook(secret, body, headers, now=1010, seen=seen)
    with pytest.raises(ValueError, match="too old"):
        verify_webhook(secret, body, headers, now=1000 + 301)
    with pytest.raises(ValueError, match="bad signature"):
        verify_webhook(b"other", body, headers, now=1010)
    changed = body.replace(b'"op-1"', b'"op-2"')
    with pytest.raises(ValueError, match="bad signature"):
        verify_webhook(secret, changed, headers, now=1010)
    with pytest.raises(ValueError, match="timestamp header"):
        verify_webhook(secret, body, {**headers, "X-FailoverAgent-Timestamp": "1200"}, now=1200)
    assert json.loads(body)["sent_at"] == 1000


def test_an_email_carries_no_header_an_event_value_could_add() -> None:
    n = Notifications.model_validate({"email": [MAIL]})
    event = Event(kind="operation.paused", operation_id="op-1", plan="plan\r\nBcc: evil@x.example",
                  operation_kind="planned_failover", status="waiting_for_manual_action",
                  details={"manual": True, "instruction": "Check sql01.\nThen resume."})
    msg = email_message(event, n.email[0], agent="failover-agent")
    assert msg["Bcc"] is None
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert "Check sql01." in msg.get_content() and msg["X-FailoverAgent-Event"] == event.id


@pytest.mark.parametrize(("kind", "details", "says"), [
    ("operation.started", {}, "commit op-1 of plan p started"),
    ("operation.paused", {"manual": False}, "paused, waiting for the orchestrator"),
    ("operation.partially_succeeded", {}, "partially succeeded"),
    ("test_failover.expiring", {"expires_at": "2026-01-15T00:00:00+00:00"}, "cleaned up by force at 2026-01-15"),
    ("preflight.problems", {"count": 2}, "failover-agent preflight found 2 problem(s)"),
])
def test_each_kind_has_a_summary_for_a_person(kind: Any, details: dict[str, Any], says: str) -> None:
    plan = None if kind == "preflight.problems" else "p"
    op = None if kind == "preflight.problems" else "op-1"
    summary = Event(kind=kind, operation_id=op, plan=plan, operation_kind="commit" if op else None,
                    details=details).summary()
    assert says in summary, summary


def test_the_site_templates_commented_example_loads_once_uncommented(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "config" / "site-template.yaml").read_text(encoding="utf-8")
    start = text.index("# notifications:")
    block = text[start:text.index("\napi:", start)]
    example = yaml.safe_load("\n".join(line[2:] for line in block.splitlines()))["notifications"]
    n = load_with(tmp_path, example).config.notifications
    assert [w.name for w in n.webhooks] == ["dr-chat"] and [e.name for e in n.email] == ["dr-team"]
    assert n.email[0].password is not None and n.email[0].password.ref == "env:FAILOVER_AGENT_SMTP_PASSWORD"
