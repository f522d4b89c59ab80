"""``failover-agent serve`` as a user starts it: a process of its own, its API reached over real
HTTP(S), stopped with SIGTERM. The demo without a config, TLS with client certificates, a refused
bind, and a stop in the middle of an operation that the next agent finishes."""

from __future__ import annotations

import os
import re
import signal
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.api.auth import new_token, token_hash
from agent.engine.journal import Journal
from agent.engine.store import Store
from tests.integration.test_lease_processes import Tail, new_site
from tests.psrpserver import make_ca
from tests.rigs import copy_demo

pytestmark = pytest.mark.slow

API_LINE = re.compile(r"API: (https?://[^ ]+?)/? ")


def agent(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], Tail]:
    full = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "agent", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=full, cwd=cwd)
    return proc, Tail(proc)


def api_url(tail: Tail) -> str:
    text = tail.wait_for("API: ")
    found = API_LINE.search(text + " ")
    assert found, text
    return found.group(1)


def stop(proc: subprocess.Popen[str], tail: Tail) -> str:
    proc.send_signal(signal.SIGTERM)
    text = tail.end(60)
    assert proc.returncode == 0, text
    assert "the lease is released" in text
    return text


def test_without_a_config_it_serves_the_demo_and_says_how_to_get_in(tmp_path: Path) -> None:
    proc, tail = agent("serve", "--port", "0", cwd=tmp_path, env={"FAILOVER_AGENT_DATA_DIR": str(tmp_path / "d")})
    try:
        url = api_url(tail)
        text = tail.wait_for("leader:")
        assert "DEMO: serving the SIMULATED demo sites" in text
        token_file = tmp_path / "d" / "demo-api-token"
        assert str(token_file) in text and url.rsplit(":", 1)[1] in text, "the curl example has the real port"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert token not in text, "the token is in its file, not on the console"
        assert httpx.get(url + "/v1/plans").status_code == 401
        plans = httpx.get(url + "/v1/plans", headers={"Authorization": f"Bearer {token}"})
        assert plans.status_code == 200 and plans.json()["plans"][0]["plan"] == "contoso-apps"
    finally:
        stop(proc, tail)


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "api")
    token = new_token()

    def edit(data: dict[str, Any]) -> None:
        data["api"] = {"host": "127.0.0.1", "tls": {"cert": str(ca.cert_file), "key": str(ca.key_file),
                                                    "client_ca": str(ca.ca_file)},
                       "tokens": [{"name": "orchestrator", "sha256": token_hash(token), "scopes": ["read"]}]}

    config = copy_demo(tmp_path / "cfg", edit=edit)
    proc, tail = agent("serve", "--port", "0", "--config", str(config), cwd=tmp_path,
                       env={"FAILOVER_AGENT_DATA_DIR": str(tmp_path / "d")})
    try:
        url = api_url(tail)
        assert url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(ca.ca_file))
        context.load_cert_chain(str(ca.client_cert_file), str(ca.client_key_file))
        headers = {"Authorization": f"Bearer {token}"}
        # The API answers before the leader has resumed what was unfinished and taken work: an
        # orchestrator polls readiness, and until then it is told why not.
        deadline = time.monotonic() + 60
        while (answer := httpx.get(url + "/v1/ready", headers=headers, verify=context)).status_code != 200:
            assert answer.status_code == 503 and answer.json()["ready"] is False, answer.text
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.1)
        assert answer.json()["ready"] is True and answer.json()["role"] == "leader"
        without_cert = ssl.create_default_context(cafile=str(ca.ca_file))
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/v1/health", verify=without_cert)
        with pytest.raises(httpx.ConnectError):  # the server is not trusted without the CA
            httpx.get(url + "/v1/health")
    finally:
        stop(proc, tail)


def test_a_bind_beyond_loopback_without_tls_is_refused(tmp_path: Path) -> None:
    proc, tail = agent("serve", "--host", "0.0.0.0", "--port", "0", cwd=tmp_path,
                       env={"FAILOVER_AGENT_DATA_DIR": str(tmp_path / "d")})
    text = tail.end(60)
    assert proc.returncode == 2, text
    assert "not a loopback address" in text and "api.tls" in text


def test_a_port_in_use_is_refused_saying_which(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc, tail = agent("serve", "--port", str(port), cwd=tmp_path,
                           env={"FAILOVER_AGENT_DATA_DIR": str(tmp_path / "d")})
        text = tail.end(60)
    assert proc.returncode == 2, text
    assert f"cannot listen on 127.0.0.1:{port}" in text


def test_a_stop_mid_operation_leaves_it_interrupted_at_a_step_boundary_and_the_next_agent_finishes_it(
        tmp_path: Path) -> None:
    site = new_site(tmp_path, f"sqlite:///{tmp_path / 'agent.sqlite'}", latency=0.3)
    token = new_token()
    text = site.config.read_text()
    site.config.write_text(text + f"\napi:\n  tokens:\n    - {{name: orch, sha256: {token_hash(token)}, "
                                  "scopes: [operate]}\n")
    headers = {"Authorization": f"Bearer {token}"}
    proc = site.cli("serve")
    tail = Tail(proc)
    url = api_url(tail)
    tail.wait_for("leader:")
    started = httpx.post(url + "/v1/operations", json={"kind": "unplanned_failover", "plan": "contoso-apps"},
                         headers=headers, timeout=60)
    assert started.status_code == 202, started.text
    op_id = started.json()["id"]
    deadline = time.monotonic() + 60
    while not any(s["status"] == "succeeded" for s in httpx.get(url + f"/v1/operations/{op_id}",
                                                               headers=headers).json()["steps"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stop(proc, tail)

    store = Store.open(site.store_url)
    try:
        view = Journal(store).view(op_id)
        assert view.status == "interrupted"
        assert not [s.name for s in view.steps if s.status == "running"], "the steps in hand were finished"
        assert [s for s in view.steps if s.status == "pending"], "it stopped before its end"
    finally:
        store.close()

    proc = site.cli("serve")
    tail = Tail(proc)
    url = api_url(tail)
    tail.wait_for(f"{op_id} unplanned_failover resumed: succeeded", timeout=120)
    assert httpx.get(url + f"/v1/operations/{op_id}", headers=headers).json()["status"] == "succeeded"
    stop(proc, tail)
