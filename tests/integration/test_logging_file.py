"""The agent's log file as a site admin reads it after a drill: JSON lines, every line of a step
naming its operation and step (the steps of a stage run in threads of their own), one event per
remote call with its endpoint and duration, one per step start and finish -- and no secret."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.config import SecretRef
from agent.configfile import load_config
from agent.configlog import configure_service_logging, log_file
from agent.engine.model import OperationKind, OpStatus
from agent.engine.runner import stage_of
from agent.errors import RefusedError, TransientError
from agent.logging import configure_logging, get_logger
from agent.remotecalls import remote_call_observers
from tests.rigs import Templates, copy_demo

TOKEN = "vmm-5f1e9c0d-never-in-a-log"
SCRIPT_SECRET = "pw-77aa-never-in-a-log"


@pytest.fixture
def quiet_logging() -> Iterator[None]:
    """Logging put back as the CLI leaves it by default, closing the test's log file."""
    yield
    configure_logging("warning")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_failover_agent", False):
            root.removeHandler(handler)
    structlog.reset_defaults()


def _with_secrets(config: dict[str, Any]) -> None:
    west = next(site for site in config["sites"] if site["name"] == "contoso-west")
    west["vmm"] = {"transport": "sim", "username": "CONTOSO\\svc-dr", "credential": "env:FA_TEST_VMM_PASSWORD"}
    config["logging"] = {"file": "logs/agent.log", "level": "debug", "console": False}
    for plan in config["recovery_plans"]:
        for group in plan["groups"]:
            for step in group.get("after", []):
                if "script" in step:
                    step["script"]["parameters"]["Password"] = SCRIPT_SECRET


def _lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]  # every line is one JSON object


def test_a_drill_logs_json_lines_with_its_operation_and_step_and_no_secret(
        new_rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_logging: None) -> None:
    monkeypatch.setenv("FA_TEST_VMM_PASSWORD", TOKEN)
    config_path = copy_demo(tmp_path / "cfg", edit=_with_secrets)
    templates = Templates.build(config_path)
    rig = new_rig(templates=templates)
    path = configure_service_logging(rig.loaded, console_level="warning")
    assert path == log_file(rig.loaded) == (tmp_path / "cfg" / "logs" / "agent.log").resolve()

    seen: list[tuple[str, str, str, float, bool]] = []
    remote_call_observers.append(lambda *call: seen.append(call))
    try:
        # An id bound by the caller (the API's request id) reaches the steps' worker threads too.
        with structlog.contextvars.bound_contextvars(request="req-42"):
            drill = rig.start(OperationKind.TEST_FAILOVER)
            cleanup = rig.start(OperationKind.CLEANUP_TEST)
    finally:
        remote_call_observers.clear()
    assert (drill.status, cleanup.status) == (OpStatus.SUCCEEDED.value, OpStatus.SUCCEEDED.value)
    # A secret that does reach the logger -- a resolved value under a secret key, the reference
    # itself, a foreign library's record -- is redacted on its way to the file.
    token = rig.config.site("contoso-west").vmm.credential
    assert isinstance(token, SecretRef) and token.reveal() == TOKEN
    get_logger("agent.test").warning("token check", token=token.reveal(), ref=token)
    logging.getLogger("some.library").warning("headers %s", {"Authorization": TOKEN})

    text = path.read_text(encoding="utf-8")
    assert TOKEN not in text and SCRIPT_SECRET not in text
    lines = _lines(path)

    for op in (drill, cleanup):
        steps = {row.name: row for row in rig.engine.journal.steps(op.id)}
        events = [e for e in lines if e.get("operation") == op.id]
        started = {e["step"] for e in events if e["event"] == "step started"}
        finished = {e["step"]: e for e in events if e["event"] == "step finished"}
        assert started == set(finished) == {n for n, r in steps.items() if r.status != "skipped"} - {""}
        for name, e in finished.items():  # an operator's pause ends by their word, not by a run
            assert e["status"] == ("waiting" if steps[name].action == "manual" else steps[name].status), name
            assert e["duration_ms"] >= 0
        # Every line logged during a step names the operation and the step, whatever logged it.
        in_steps = [e for e in events if "step" in e]
        assert all(e["request"] == "req-42" for e in in_steps)
        calls = [e for e in in_steps if e["event"] == "remote call"]
        assert calls, "remote calls are logged"
        for e in calls:
            assert e["step"] in steps and e["outcome"] == "ok" and e["duration_ms"] >= 0
            assert e["endpoint"] and e["call"].startswith(e["kind"] + ".")
            assert e["level"] == ("info" if e["call"].split(".")[1] in _CHANGES else "debug")
        # The steps of a stage run in threads: their remote calls carry their own step.
        by_stage: dict[int, set[str]] = defaultdict(set)
        for row in steps.values():
            by_stage[stage_of(row)].add(row.name)
        parallel = {name for names in by_stage.values() if len(names) > 1 for name in names}
        assert parallel & {e["step"] for e in calls}, "some stage ran steps side by side"

    changes = [e for e in lines if e.get("event") == "remote call" and e["level"] == "info"]
    assert {"vmm.grant_ips", "vmm.revoke_ips", "hyperv.replicate", "dns.apply"} <= {e["call"] for e in changes}
    assert any(e["items"] >= 1 and "changed" in e for e in changes if e["call"] == "vmm.grant_ips")
    # The observers heard of the very same calls.
    logged = [e for e in lines if e.get("event") == "remote call"]
    assert len(seen) == len(logged)
    assert [(c[0], c[2]) for c in seen] == [(e["endpoint"], e["call"]) for e in logged]
    assert all(ok for *_, ok in seen)


_CHANGES = {"grant_ips", "revoke_ips", "create_test_networks", "delete_test_networks", "connect_nics",
            "set_failover_configs", "clear_failover_configs", "replicate", "set_power", "apply",
            "announce", "withdraw", "run_script"}


def test_a_failed_remote_call_is_logged_with_its_error_and_an_observer_cannot_break_a_call(
        new_rig, tmp_path: Path, quiet_logging: None) -> None:
    rig = new_rig()
    path = tmp_path / "agent.log"
    configure_logging("error", file=path, file_level="info")
    heard: list[bool] = []

    def broken(*_call: Any) -> None:
        raise RuntimeError("metrics are down")

    remote_call_observers.extend([broken, lambda *call: heard.append(call[4])])
    rig.world.inject({"call": "vmm.read_inventory", "fault": "transient", "count": 1})
    try:
        inventory = rig.engine.ports.vmm["contoso-west"].read_inventory
        with pytest.raises(TransientError) as raised:
            inventory()
        assert inventory().site == "contoso-west"  # the fault was for one call
    finally:
        remote_call_observers.clear()
    events = [e for e in _lines(path) if e["event"] == "remote call"]
    failed = [e for e in events if e["outcome"] != "ok"]
    assert [(e["call"], e["endpoint"], e["level"]) for e in failed][-1] == (
        "vmm.read_inventory", "vmm@contoso-west", "warning")
    assert failed[-1]["outcome"] == raised.value.code
    assert heard[-2:] == [False, True]
    assert any(e["event"] == "a remote-call observer failed" for e in _lines(path))


def test_a_log_file_that_cannot_be_written_is_refused_naming_the_key(tmp_path: Path, quiet_logging: None) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")

    def edit(config: dict[str, Any]) -> None:
        config["logging"] = {"file": str(blocker / "agent.log")}

    loaded = load_config(copy_demo(tmp_path / "cfg", edit=edit))
    with pytest.raises(RefusedError, match=r"^logging\.file: cannot write the log file") as refused:
        configure_service_logging(loaded, console_level="warning")
    assert refused.value.fields["key"] == "logging.file"


def test_the_log_file_defaults_to_the_data_dir_and_rotates(tmp_path: Path, quiet_logging: None) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["agent"]["data_dir"] = "state"
        config["logging"] = {"max_bytes": 2000, "backups": 2, "level": "info"}

    loaded = load_config(copy_demo(tmp_path / "cfg", edit=edit))
    path = configure_service_logging(loaded, console_level="warning")
    assert path == (tmp_path / "cfg" / "state" / "agent.log").resolve()
    log = get_logger("agent.test")
    for i in range(200):
        log.info("filler", i=i)
    rotated = sorted(p.name for p in path.parent.iterdir())
    assert rotated == ["agent.log", "agent.log.1", "agent.log.2"]
    assert all(p.stat().st_size <= 2000 for p in path.parent.iterdir())
    log.debug("below the file's level")
    assert "below the file's level" not in path.read_text()


def test_the_demos_relative_log_file_is_under_its_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.configfile import ENV_DATA_DIR

    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "demo-data"))

    def edit(config: dict[str, Any]) -> None:
        config["logging"] = {"file": "logs/demo.log"}

    # The shipped demo may sit in a read-only site-packages: nothing is written beside it.
    loaded = load_config(copy_demo(tmp_path / "shipped", edit=edit), source="demo")
    assert log_file(loaded) == (tmp_path / "demo-data" / "logs" / "demo.log").resolve()
