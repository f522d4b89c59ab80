"""Recorded Windows DNS server answers (``tests/recordings/dns/``) replayed through
:class:`PsWindowsDns` under the engine's retry loop: a transient fault of the wire is retried, a
terminating error of the script stops at once with its DNS code, one refused record set leaves the
others of its batch applied, and what the server spells its own way reads canonically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import jsonschema
import pytest

from agent.config import DnsServer, Endpoint, RetryPolicy
from agent.domain.errors import DnsBatchError
from agent.domain.model import RecordChange, RecordType
from agent.drivers.ps.windns import PsWindowsDns
from agent.drivers.remoting import script_dir
from agent.engine.retrying import RetryingPort
from agent.errors import AgentError
from agent.ports import Dns
from tests.replay import Recorded

RECORDINGS = Path(__file__).parents[1] / "recordings" / "dns"
ZONE = "corp.contoso.example."
A = RecordType.A


class Replay(Recorded):
    directory = RECORDINGS


def port(replay: Replay) -> Dns:
    server = DnsServer(name="dc01", kind="windows",
                       endpoint=Endpoint(transport="psrp", address="dc01.corp.contoso.example"))
    policy = RetryPolicy(attempts=3, initial_backoff_s=0, max_backoff_s=0)
    return cast(Dns, RetryingPort(PsWindowsDns(replay, server, zones=[ZONE]), policy, lambda s: None))


def change(name: str, expected: tuple[str, ...], new: tuple[str, ...]) -> RecordChange:
    return RecordChange(zone=ZONE, name=f"{name}.{ZONE}", type=A, ttl=300, expected=expected, new_values=new)


@pytest.mark.parametrize("path", sorted(RECORDINGS.glob("*.json")), ids=lambda p: p.stem)
def test_recorded_answers_have_the_documented_shape(path: Path) -> None:
    recording = json.loads(path.read_text(encoding="utf-8"))
    schema = json.loads((script_dir() / f"{recording['script']}.schema.json").read_text(encoding="utf-8"))
    for document in (a for a in recording["answers"] if "raise" not in a):
        jsonschema.validate(document, schema)


def test_a_read_is_canonical_whatever_the_server_spells() -> None:
    replay = Replay("read-aged")
    web01, apex = port(replay).read(ZONE, [(f"web01.{ZONE}", A), (ZONE, RecordType.AAAA)])
    assert (web01.name, web01.ttl, web01.values) == (f"web01.{ZONE}", 1200, ("10.1.1.10", "10.1.1.20"))
    assert (apex.name, apex.values) == (ZONE, ("2001:db8::5",))
    assert json.loads(replay.sent[0]["NamesJson"]) == [{"name": "web01", "type": "A"}, {"name": "@", "type": "AAAA"}]


def test_transient_fault_is_retried_with_the_same_batch() -> None:
    replay = Replay("set-transient-then-answer")
    port(replay).apply(ZONE, [change("web01", ("10.1.1.10",), ("172.16.1.10",)),
                              change("app01", ("10.1.2.10",), ("172.16.1.20",))])
    assert len(replay.sent) == 2 and replay.sent[0] == replay.sent[1]


def test_one_refused_record_set_leaves_the_others_applied() -> None:
    replay = Replay("set-partial")
    with pytest.raises(DnsBatchError) as failed:
        port(replay).apply(ZONE, [change("web01", ("10.1.1.10",), ("172.16.1.10",)),
                                  change("app01", ("10.1.2.10",), ("172.16.2.10",)),
                                  change("new01", (), ("172.16.1.11",))])
    assert len(replay.sent) == 1, "a refusal is permanent: not retried"
    [refused] = failed.value.failures
    assert refused.code == "dns_refused" and refused.fields["records"] == [f"app01.{ZONE} A"]
    assert refused.fields["fully_qualified_error_id"].startswith("WIN32 5,")
    assert failed.value.fields["applied_batches"] == 2


def test_a_set_changed_since_read_refuses_the_whole_call() -> None:
    replay = Replay("set-prerequisite")
    with pytest.raises(AgentError) as failed:
        port(replay).apply(ZONE, [change("web01", ("10.1.1.10",), ("172.16.1.10",)),
                                  change("app01", ("10.1.2.10",), ("172.16.2.10",))])
    assert failed.value.code == "dns_prerequisite_failed"
    assert failed.value.fields["records"] == [f"web01.{ZONE} A"] and failed.value.fields["found"] == ["10.9.9.9"]
    assert len(replay.sent) == 1


@pytest.mark.parametrize(("name", "code"), [("set-no-zone", "dns_not_authoritative"),
                                            ("set-access-denied", "dns_refused")])
def test_terminating_error_stops_without_retry(name: str, code: str) -> None:
    replay = Replay(name)
    with pytest.raises(AgentError) as failed:
        port(replay).apply(ZONE, [change("web01", ("10.1.1.10",), ("172.16.1.10",))])
    assert (failed.value.code, failed.value.category) == (code, "permanent")
    assert failed.value.fields["fully_qualified_error_id"].split(",")[1] == "Get-DnsServerZone"
    assert len(replay.sent) == 1


def test_a_record_that_timed_out_is_retried_with_the_whole_batch() -> None:
    replay = Replay("set-item-timeout-then-in-effect")
    port(replay).apply(ZONE, [change("web01", ("10.1.1.10",), ("172.16.1.10",)),
                              change("app01", ("10.1.2.10",), ("172.16.2.10",))])
    assert len(replay.sent) == 2 and replay.sent[0] == replay.sent[1]
