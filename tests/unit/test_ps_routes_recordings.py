"""Recorded router answers (``tests/recordings/routes/``) replayed through :class:`PsBgpRoutes`
under the engine's retry loop: a transient fault of the wire is retried, a terminating error of
the script stops at once, and one failed network leaves the others of its batch standing."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from agent.config import Endpoint, RetryPolicy
from agent.domain.model import Route
from agent.drivers.ps.routes import PsBgpRoutes
from agent.drivers.remoting import RemoteScriptError, script_dir
from agent.engine.retrying import RetryingPort
from agent.ports import Routes
from tests.replay import Recorded

RECORDINGS = Path(__file__).parents[1] / "recordings" / "routes"


class Replay(Recorded):
    directory = RECORDINGS
    exact = True


def port(replay: Replay) -> Routes:
    driver = PsBgpRoutes(replay, {"gw-west": Endpoint(transport="psrp", address="gw-west.contoso.local")})
    policy = RetryPolicy(attempts=3, initial_backoff_s=0, max_backoff_s=0)
    return RetryingPort(driver, policy, lambda s: None)  # type: ignore[return-value]


@pytest.mark.parametrize("path", sorted(RECORDINGS.glob("*.json")), ids=lambda p: p.stem)
def test_recorded_answers_have_the_documented_shape(path: Path) -> None:
    recording = json.loads(path.read_text(encoding="utf-8"))
    schema = json.loads((script_dir() / f"{recording['script']}.schema.json").read_text(encoding="utf-8"))
    for document in [a for a in recording["answers"] if "raise" not in a]:
        jsonschema.validate(document, schema)


def test_one_refused_network_leaves_the_others_of_the_batch_standing() -> None:
    replay = Replay("bgp-announce-partial")
    wanted = [Route(router="gw-west", prefix=p) for p in ("192.168.1.0/24", "10.5.0.0/16", "2001:db8:5::/48")]
    kept, added, refused = port(replay).announce(wanted)
    assert (kept.ok, kept.changed, kept.value) == (True, False, wanted[0])
    assert (added.ok, added.changed, added.value) == (True, True, wanted[1])
    assert refused.error is not None and refused.error.code == "remote_item_error" and not refused.changed
    assert refused.error.fields["fully_qualified_error_id"] == "HRESULT 0x80070057,Add-BgpCustomRoute"
    assert len(replay.sent) == 1, "an item error is the router's answer: not retried"


def test_a_transient_fault_is_retried_and_the_answer_read_as_networks() -> None:
    replay = Replay("bgp-read-transient-then-answer")
    routes = port(replay).read_routes("gw-west")
    assert routes == [Route(router="gw-west", prefix=p) for p in ("192.168.1.0/24", "2001:db8:1::/48")]
    assert all(r.announced_network for r in routes)
    assert len(replay.sent) == 2


def test_a_speaker_without_bgp_stops_at_once_naming_the_cmdlet() -> None:
    replay = Replay("bgp-not-configured")
    with pytest.raises(RemoteScriptError) as caught:
        port(replay).probe("gw-west")
    assert "BGP is not configured" in caught.value.message
    assert caught.value.fields["fully_qualified_error_id"].endswith(",Get-BgpCustomRoute")
    assert len(replay.sent) == 1, "a terminating error of the script is permanent: not retried"
