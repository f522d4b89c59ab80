"""``failover-agent serve`` as a service runs it: a real process that logs JSON lines to the file
its config names (the console stays at the command line's level) and, as leader, runs the
periodic preflight at once and keeps its report in the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.cli.session import _store_url
from agent.configfile import load_config
from agent.engine.store import Store
from agent.preflight_job import latest_report
from tests.rigs import DEMO_PLAN, copy_demo

WORKTREE = Path(__file__).resolve().parents[2]


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_serve_logs_to_its_file_and_keeps_a_preflight_report(tmp_path: Path) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["agent"]["data_dir"] = "state"
        config["logging"] = {"file": "logs/agent.log", "level": "info"}
        config.setdefault("policies", {})["preflight_interval"] = "PT1H"

    config = copy_demo(tmp_path / "cfg", edit=edit)
    log = tmp_path / "cfg" / "logs" / "agent.log"
    # This checkout's agent, whatever the environment's editable install points at.
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(WORKTREE))
    command = [sys.executable, "-m", "agent", "--log-level", "error", "serve", "--port", "0", "--config", str(config)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any(e["event"] == "preflight: no problems" for e in _events(log)):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"no preflight in the log; serve said: {proc.communicate(timeout=10)}")
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)

    events = _events(log)  # every line is one JSON object
    assert {e["logger"] for e in events} >= {"agent.scheduler", "agent.preflight"}
    assert all(e["level"] != "debug" for e in events), "the file's level is info"
    assert f"logging to {log.resolve()}" in err
    assert '"event"' not in err, "the console stays at --log-level error"
    store = Store.open(_store_url(load_config(config)))
    try:
        report = latest_report(store)
    finally:
        store.close()
    assert report is not None and report.ok and report.plans == (DEMO_PLAN,)
