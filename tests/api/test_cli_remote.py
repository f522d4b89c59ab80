"""The CLI against a running agent, as a site admin uses it while 'failover-agent serve' holds the
store: a real API server (uvicorn on 127.0.0.1) on the demo sites, the real command line given
--agent-url and --token (or the environment, or a client file), and what the admin sees: the same
output as local mode, exit codes, and the agent's refusals in the CLI's words."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.cli import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_WAITING, STORE_NAME, session
from agent.cli.remote import ENV_CLIENT_FILE, ENV_TOKEN, ENV_URL
from agent.configfile import DEMO_PLAN
from agent.engine.lease import Lease
from agent.engine.model import OperationView
from agent.engine.store import Store, utcnow
from agent.report import build_report
from tests.apiserver import ApiServer, free_port, serving
from tests.psrpserver import make_ca
from tests.rigs import OP_ID, Rig, run_cli

pytestmark = pytest.mark.usefixtures("cli_env")


def remote(api: ApiServer, *args: str, scope: str = "operate", input: str | None = None) -> Any:
    return run_cli("--agent-url", api.url, "--token", api.tokens[scope], *args, input=input)


def op_id_in(text: str) -> str:
    found = OP_ID.search(text)
    assert found, text
    return found.group()


# ------------------------------------------------------------------------ reading


def test_status_shows_each_plan_as_the_agent_reads_it(api: ApiServer) -> None:
    shown = remote(api, "status", scope="read")
    assert shown.exit_code == EXIT_OK, shown.output
    assert f"plan {DEMO_PLAN}: protected" in shown.stdout
    assert "can run now:" in shown.stdout and f"--agent-url {api.url} run --plan {DEMO_PLAN}" in shown.stdout

    as_json = remote(api, "status", "--json", scope="read")
    assert as_json.exit_code == EXIT_OK, as_json.output
    with api.client("read") as client:
        served = client.get("/v1/plans").json()
    assert json.loads(as_json.stdout) == served
    assert served["mode"] == "full" and served["plans"][0]["kinds_allowed"]

    unknown = remote(api, "status", "--plan", "nope", scope="read")
    assert unknown.exit_code == EXIT_REFUSED
    assert "no recovery plan named 'nope'" in unknown.stderr and DEMO_PLAN in unknown.stderr


def test_plan_previews_what_the_agent_would_change(api: ApiServer) -> None:
    text = remote(api, "plan", "--plan", DEMO_PLAN, "--kind", "test", scope="read")
    assert text.exit_code == EXIT_OK, text.output
    as_json = remote(api, "plan", "--plan", DEMO_PLAN, "--kind", "test", "--json", scope="read")
    assert as_json.exit_code == EXIT_OK, as_json.output
    body = json.loads(as_json.stdout)
    assert body["operation"]["kind"] == "test_failover" and body["counts"]["reserve"] > 0
    assert body["checksum"] in text.stdout and body["summary"] in text.stdout
    assert "sql01" in text.stdout


def test_ops_list_and_show_print_what_the_api_serves(api: ApiServer) -> None:
    paused = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "test")
    assert paused.exit_code == EXIT_WAITING, paused.output
    op_id = op_id_in(paused.stdout)
    with api.client("read") as client:
        served = client.get(f"/v1/operations/{op_id}").json()

    listed = json.loads(remote(api, "ops", "list", "--json", scope="read").stdout)
    assert [o["id"] for o in listed] == [op_id]
    assert {k: v for k, v in listed[0].items() if k != "elapsed_s"} == \
        {k: v for k, v in served.items() if k not in ("steps", "elapsed_s", "requested_by", "plan_checksum")}
    assert served["requested_by"] == "api:operate-caller" and served["plan_checksum"].startswith("sha256:")

    shown = remote(api, "ops", "show", op_id[:8], "--json", scope="read")
    assert shown.exit_code == EXIT_OK, shown.output
    body = json.loads(shown.stdout)
    assert {k: v for k, v in body.items() if k != "elapsed_s"} == {k: v for k, v in served.items() if k != "elapsed_s"}

    table = remote(api, "ops", "list", "--status", "waiting", scope="read")
    assert op_id in table.stdout and "waiting_for_manual_action" in table.stdout
    text = remote(api, "ops", "show", op_id, scope="read")
    assert text.exit_code == EXIT_OK, text.output
    assert "waiting for a manual action: Check that SQL Server on sql01" in text.stdout
    assert "by api:operate-caller" in text.stdout and f"plan:        {served['plan_checksum']}" in text.stdout
    assert f"failover-agent --agent-url {api.url} ops resume {op_id}" in text.stdout
    none = remote(api, "ops", "list", "--status", "failed", scope="read")
    assert f"no failed operations at the agent {api.url}" in none.stdout


# ------------------------------------------------------------------------ running


def test_run_follows_the_operation_to_its_manual_pause_and_ops_resume_finishes_it(api: ApiServer) -> None:
    paused = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "test")
    assert paused.exit_code == EXIT_WAITING, paused.output
    op_id = op_id_in(paused.stdout)
    out = paused.stdout
    assert "paused for a manual action" in out and "Check that SQL Server on sql01" in out
    assert f"failover-agent --agent-url {api.url} ops resume {op_id}" in out
    assert "ok " in out, "each step that ended has its line, from the event stream"
    with api.client("read") as client:
        assert client.get(f"/v1/operations/{op_id}").json()["status"] == "waiting_for_manual_action"

    resumed = remote(api, "ops", "resume", op_id)
    assert resumed.exit_code == EXIT_OK, resumed.output
    assert f"{op_id}: marking the manual step done" in resumed.stdout
    assert f"succeeded: test_failover {op_id} of plan {DEMO_PLAN}" in resumed.stdout
    assert f"--agent-url {api.url} run --plan {DEMO_PLAN} --kind cleanup" in resumed.stdout
    with api.client("read") as client:
        op = client.get(f"/v1/operations/{op_id}").json()
    assert op["status"] == "succeeded" and any(n for n in op["steps"] if n["action"] == "manual")

    again = remote(api, "ops", "resume", op_id)
    assert again.exit_code == EXIT_REFUSED and f"{op_id} is succeeded; it cannot run again" in again.stderr

    audit = json.loads(remote(api, "ops", "audit", op_id, "--json", scope="read").stdout)
    assert {"operation.resume", "operation.manual_step_done"} <= {e["action"] for e in audit}
    assert {e["actor"] for e in audit if e["action"] == "operation.resume"} == {"api:operate-caller"}

    noted = remote(api, "ops", "note", op_id, "drill checked by carol")
    assert noted.exit_code == EXIT_OK and f"note added to {op_id} by api:operate-caller" in noted.stdout

    report = remote(api, "report", op_id, "--csv", scope="read")
    assert report.exit_code == EXIT_OK and op_id in report.stdout and "drill checked by carol" in report.stdout


def test_run_with_json_prints_the_operation_as_the_api_has_it(api: ApiServer) -> None:
    paused = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "test", "--json")
    assert paused.exit_code == EXIT_WAITING, paused.output
    body = json.loads(paused.stdout)
    assert body["status"] == "waiting_for_manual_action" and body["waiting_for"].startswith("Check that SQL")
    resumed = remote(api, "ops", "resume", body["id"], "--json")
    assert resumed.exit_code == EXIT_OK and json.loads(resumed.stdout)["status"] == "succeeded"
    view, now = api.served.engine.view(body["id"]), utcnow()
    assert OperationView.from_json(view.to_json(now)).to_json(now) == view.to_json(now), "the API's JSON is the view"


def test_a_failover_is_reviewed_and_pinned_to_the_plan_reviewed(api: ApiServer,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    blind = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "planned")
    assert blind.exit_code == EXIT_REFUSED
    assert "needs a confirmation, and there is nobody to ask" in blind.stderr
    assert "--yes --checksum sha256:" in blind.stderr and "sql01" in blind.stdout, "the preview was shown"

    monkeypatch.setattr(session, "is_interactive", lambda: True)
    declined = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "planned", input="n\n")
    assert declined.exit_code == EXIT_REFUSED and "not confirmed" in declined.stderr

    stale = "sha256:" + "0" * 64
    changed = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "planned", "--yes", "--checksum", stale)
    assert changed.exit_code == EXIT_REFUSED
    assert "changed since it was reviewed" in changed.stderr and f"--agent-url {api.url} plan" in changed.stderr
    with api.client("read") as client:
        assert client.get("/v1/operations").json()["operations"] == [], "nothing was started"


def test_a_refusal_of_the_agent_is_the_clis_refusal(api: ApiServer) -> None:
    nothing = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "cleanup")
    assert nothing.exit_code == EXIT_REFUSED, nothing.output
    with api.client("read") as client:
        assert client.get("/v1/operations").json()["operations"] == []
    assert "refused: no test_failover operation of plan contoso-apps for a cleanup_test" in nothing.stderr

    as_json = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "cleanup", "--json")
    assert as_json.exit_code == EXIT_REFUSED
    assert json.loads(as_json.stdout)["error"]["category"] == "refused"

    reader = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "test", scope="read")
    assert reader.exit_code == EXIT_REFUSED
    assert "token 'read-caller' lacks scope 'operate'" in reader.stderr

    unknown = remote(api, "ops", "show", "op-ffffffffffff", scope="read")
    assert unknown.exit_code == EXIT_REFUSED
    assert f"no operation 'op-ffffffffffff' at the agent {api.url}" in unknown.stderr


# ------------------------------------------------------------------- reaching it


def test_a_wrong_token_is_refused_saying_how_to_give_one(api: ApiServer) -> None:
    result = run_cli("--agent-url", api.url, "--token", "fa_not-a-token", "status")
    assert result.exit_code == EXIT_REFUSED
    assert "the bearer token is not one of this agent's tokens" in result.stderr
    assert "--token" in result.stderr and "fa_not-a-token" not in result.output

    none = run_cli("--agent-url", api.url, "ops", "list")
    assert none.exit_code == EXIT_REFUSED and "needs a bearer token" in none.stderr


def test_an_agent_that_does_not_answer_is_unreachable_exit_3() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("status",), ("run", "--plan", DEMO_PLAN, "--kind", "test")):
        result = run_cli("--agent-url", url, "--token", "fa_x", *args)
        assert result.exit_code == EXIT_UNREACHABLE, result.output
        assert f"cannot reach the agent at {url}" in result.stderr


def test_urls_that_cannot_be_right_are_refused(api: ApiServer, tmp_path: Path) -> None:
    clear = run_cli("--agent-url", "http://agent.contoso.example:8740", "--token", "fa_x", "status")
    assert clear.exit_code == EXIT_REFUSED and "the token would cross the network in clear" in clear.stderr
    odd = run_cli("--agent-url", "agent:8740", "status")
    assert odd.exit_code == EXIT_REFUSED and "is not an agent URL" in odd.stderr
    both = remote(api, "status", "--config", str(tmp_path / "x.yaml"))
    assert both.exit_code == EXIT_REFUSED and "the agent uses its own config" in both.stderr


def test_the_url_and_token_from_the_environment(api: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_URL, api.url)
    monkeypatch.setenv(ENV_TOKEN, api.tokens["read"])
    listed = run_cli("ops", "list", "--json")
    assert listed.exit_code == EXIT_OK, listed.output
    assert json.loads(listed.stdout) == []
    monkeypatch.setenv("MY_TOKEN", api.tokens["operate"])
    started = run_cli("--token", "env:MY_TOKEN", "run", "--plan", DEMO_PLAN, "--kind", "test")
    assert started.exit_code == EXIT_WAITING, started.output
    assert "--agent-url" not in started.stdout, "the URL comes from the environment: not repeated in hints"


@pytest.fixture
def client_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "user-config" / "failover-agent" / "client.yaml"  # where XDG_CONFIG_HOME points
    path.parent.mkdir(parents=True)
    yield path


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_the_client_file_with_a_plain_token_must_be_private(api: ApiServer, client_file: Path) -> None:
    client_file.write_text(f"url: {api.url}\ntoken: {api.tokens['read']}\n")
    client_file.chmod(0o644)
    opened = run_cli("status")
    assert opened.exit_code == EXIT_REFUSED
    assert f"{client_file} holds a token and can be read by others (mode 0644)" in opened.stderr
    assert f"chmod 600 {client_file}" in opened.stderr and api.tokens["read"] not in opened.output

    client_file.chmod(0o600)
    private = run_cli("status", "--json")
    assert private.exit_code == EXIT_OK, private.output
    assert json.loads(private.stdout)["plans"][0]["plan"] == DEMO_PLAN


def test_the_client_file_may_name_where_the_token_is(api: ApiServer, client_file: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(api.tokens["read"] + "\n")
    client_file.write_text(f"url: {api.url}\ntoken: file:{token_file}\n")
    client_file.chmod(0o644)  # a reference is no secret
    assert run_cli("status").exit_code == EXIT_OK

    client_file.write_text(f"url: {api.url}\ntokn: env:X\n")
    typo = run_cli("status")
    assert typo.exit_code == EXIT_REFUSED and "tokn" in typo.stderr and str(client_file) in typo.stderr

    monkeypatch.setenv(ENV_CLIENT_FILE, str(tmp_path / "missing.yaml"))
    missing = run_cli("status")
    assert missing.exit_code == EXIT_REFUSED and "missing.yaml, which is not a file" in missing.stderr


# --------------------------------------------------------------- the leader's lease


def test_a_command_refused_beside_a_leader_says_how_to_go_through_its_api(cli_env: Path) -> None:
    assert run_cli("status").exit_code == EXIT_OK  # makes the store
    store = Store.open(f"sqlite:///{cli_env / STORE_NAME}")
    lease = Lease(store, lease_s=60)
    try:
        lease.acquire()
        refused = run_cli("run", "--plan", DEMO_PLAN, "--kind", "test")
        assert refused.exit_code in (EXIT_REFUSED, EXIT_FAILED), refused.output
        assert "If that is 'failover-agent serve', run the command through it: failover-agent --agent-url " \
               "http://127.0.0.1:8740 COMMAND" in refused.stderr.replace("\n", " ")
    finally:
        lease.release()
        store.close()


def test_https_is_verified_against_the_ca_given(new_rig: Callable[..., Rig], tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "agent")
    with serving(new_rig(), tls=ca) as api:
        assert api.url.startswith("https://127.0.0.1:")
        untrusted = remote(api, "status", scope="read")
        assert untrusted.exit_code == EXIT_REFUSED, untrusted.output
        assert "shows a certificate this machine does not trust" in untrusted.stderr
        assert "--ca-file" in untrusted.stderr
        trusted = run_cli("--agent-url", api.url, "--token", api.tokens["read"], "--ca-file", str(ca.ca_file),
                          "status", "--json")
        assert trusted.exit_code == EXIT_OK, trusted.output
        assert json.loads(trusted.stdout)["plans"][0]["plan"] == DEMO_PLAN
        not_pem = tmp_path / "not.pem"
        not_pem.write_text("hello")
        bad = run_cli("--agent-url", api.url, "--ca-file", str(not_pem), "status")
        assert bad.exit_code == EXIT_REFUSED and "not a readable PEM bundle" in bad.stderr


def test_a_standby_refuses_to_run_and_the_cli_says_try_again_exit_3(new_rig: Callable[..., Rig]) -> None:
    standby = SimpleNamespace(role="standby", accepting=False,
                              last_holder="failover-agent pid 4242 on host vmm02 (lease until later)")
    with serving(new_rig(), leader=standby) as api:
        assert remote(api, "status", scope="read").exit_code == EXIT_OK, "a standby answers reads"
        result = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "test")
        assert result.exit_code == EXIT_UNREACHABLE, result.output
        assert "this agent is a standby; the store's operations are run by failover-agent pid 4242 on host vmm02" \
            in result.stderr


def test_ops_cancel_undoes_a_paused_drill_through_the_agent(api: ApiServer) -> None:
    op_id = op_id_in(remote(api, "run", "--plan", DEMO_PLAN, "--kind", "test").stdout)
    cancelled = remote(api, "ops", "cancel", op_id)
    assert cancelled.exit_code == EXIT_OK, cancelled.output
    assert f"cancelled: test_failover {op_id} of plan {DEMO_PLAN}" in cancelled.stdout
    with api.client("read") as client:
        assert client.get(f"/v1/operations/{op_id}").json()["status"] == "cancelled"
        plans = client.get("/v1/plans", params={"refresh": True}).json()["plans"]
    assert plans[0]["state"] == "protected", "the test VMs and addresses are gone again"
    again = remote(api, "ops", "cancel", op_id)
    assert again.exit_code == EXIT_REFUSED and f"operation {op_id} is already cancelled" in again.stderr


def test_cancelling_a_failover_through_the_agent_needs_a_confirmation(api: ApiServer) -> None:
    started = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "planned", "--yes")
    assert started.exit_code == EXIT_WAITING, started.output
    op_id = op_id_in(started.stdout)
    blind = remote(api, "ops", "cancel", op_id)
    assert blind.exit_code == EXIT_REFUSED
    assert "changes production (it rolls the failover back) and needs a confirmation" in blind.stderr
    with api.client("read") as client:
        assert client.get(f"/v1/operations/{op_id}").json()["status"] == "waiting_for_manual_action"


def test_report_json_is_the_same_through_the_agent_as_here(api: ApiServer) -> None:
    op_id = op_id_in(remote(api, "run", "--plan", DEMO_PLAN, "--kind", "test").stdout)
    assert remote(api, "ops", "resume", op_id).exit_code == EXIT_OK
    through = remote(api, "report", op_id, "--json", scope="read")
    assert through.exit_code == EXIT_OK, through.output
    facts = json.loads(through.stdout)
    here = build_report(api.served.store, op_id).to_json()
    assert facts == here | {"generated_at": facts["generated_at"]}
    assert op_id in through.stdout
    both = remote(api, "report", op_id, "--json", "--csv", scope="read")
    assert both.exit_code == EXIT_REFUSED and "one report at a time" in both.stderr


class CuttingProxy:
    """A TCP proxy in front of the API that loses, once each, what a flaky network loses: the
    answer to the first start (the agent got the request; the CLI never hears back), and the first
    event stream after its first bytes."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.cut: list[str] = []
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        cut: list[str] = []  # what to lose of the answer now in flight on this connection

        def seen(request: bytes) -> None:
            self.requests.append(request)
            line = request.split(b"\r\n", 1)[0]
            for name, match in (("start", line.startswith(b"POST /v1/operations ")), ("events", b"/events " in line)):
                if match and name not in self.cut:
                    self.cut.append(name)
                    cut.append(name)

        def upward() -> None:
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    if data[:4] in (b"GET ", b"POST"):
                        seen(data)
                    upstream.sendall(data)

        threading.Thread(target=upward, daemon=True).start()
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if "start" in cut:
                    time.sleep(0.3)  # the agent has created it; its answer is lost
                    break
                client.sendall(data)
                if "events" in cut:
                    break
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_lost_answer_and_a_dropped_stream_neither_start_twice_nor_lose_the_operation(api: ApiServer) -> None:
    proxy = CuttingProxy(int(api.url.rsplit(":", 1)[1]))
    try:
        result = run_cli("--agent-url", proxy.url, "--token", api.tokens["operate"],
                         "run", "--plan", DEMO_PLAN, "--kind", "test")
    finally:
        proxy.close()
    assert proxy.cut == ["start", "events"], proxy.cut
    assert result.exit_code == EXIT_WAITING, result.output
    starts = [r for r in proxy.requests if r.startswith(b"POST /v1/operations ")]
    keys = {line for r in starts for line in r.split(b"\r\n") if line.lower().startswith(b"idempotency-key:")}
    assert len(starts) == 2 and len(keys) == 1, "the start was sent again, with the same key"
    with api.client("read") as client:
        ops = client.get("/v1/operations").json()["operations"]
    assert [o["id"] for o in ops] == [op_id_in(result.stdout)], "one operation, followed to its pause"
    assert "Check that SQL Server on sql01" in result.stdout


def test_the_client_files_token_goes_to_its_agent_only(api: ApiServer, client_file: Path) -> None:
    client_file.write_text(f"url: https://other-agent.contoso.example:8740\ntoken: {api.tokens['read']}\n")
    client_file.chmod(0o600)
    elsewhere = run_cli("--agent-url", api.url, "status")
    assert elsewhere.exit_code == EXIT_REFUSED
    assert "needs a bearer token" in elsewhere.stderr, "the file's token was not sent to another agent"
    client_file.write_text(f"token: {api.tokens['read']}\n")  # a token for whichever agent is named
    assert run_cli("--agent-url", api.url, "status").exit_code == EXIT_OK


def test_agent_url_with_a_command_that_works_on_this_machine_is_refused(api: ApiServer) -> None:
    result = run_cli("--agent-url", api.url, "validate")
    assert result.exit_code == EXIT_REFUSED
    assert "'validate' works on this machine's config" in result.stderr


def test_an_operator_at_the_terminal_answers_the_pause_and_the_run_goes_on(api: ApiServer,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "is_interactive", lambda: True)
    result = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "test", input="y\n")
    assert result.exit_code == EXIT_OK, result.output
    assert "Done?" in result.stdout and "succeeded: test_failover" in result.stdout


def test_a_failover_pinned_to_the_checksum_reviewed_runs(api: ApiServer, tmp_path: Path) -> None:
    planned = json.loads(remote(api, "plan", "--plan", DEMO_PLAN, "--kind", "planned", "--json").stdout)
    result = remote(api, "run", "--plan", DEMO_PLAN, "--kind", "planned", "--yes", "--checksum", planned["checksum"])
    assert result.exit_code == EXIT_WAITING, result.output
    assert f"plan: {planned['summary']}\nchecksum {planned['checksum']}" in result.stdout
    op_id = op_id_in(result.stdout)
    audit = json.loads(remote(api, "ops", "audit", op_id, "--json", scope="read").stdout)
    confirmed = [e for e in audit if e["action"] == "operation.confirmed"]
    assert [(e["actor"], e["details"]) for e in confirmed] == \
        [("api:operate-caller", {"by": "--yes (through the API)", "checksum": planned["checksum"]})]

    author = remote(api, "ops", "note", op_id, "checked", "--author", "carol")
    assert author.exit_code == EXIT_REFUSED and "under the name of the token" in author.stderr
    target = tmp_path / "report.html"
    written = remote(api, "report", op_id, "--output", str(target), scope="read")
    assert written.exit_code == EXIT_OK and f"report of {op_id} written to {target}" in written.stdout
    assert op_id in target.read_text(encoding="utf-8")


class NotAnAgent(http.server.BaseHTTPRequestHandler):
    """Some other web server where the user thought the agent was."""

    def do_GET(self) -> None:
        broken = self.path.startswith("/v1/plans")
        body = b"<html>Internal error</html>" if broken else b"<html>Welcome to nginx!</html>"
        self.send_response(500 if broken else 200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def test_a_url_that_is_not_the_agent_is_said_so() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotAnAgent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        broken = run_cli("--agent-url", url, "--token", "fa_x", "status")
        assert broken.exit_code == EXIT_FAILED, broken.output
        assert "HTTP 500 from /v1/plans" in broken.stderr
        other = run_cli("--agent-url", url, "--token", "fa_x", "ops", "list")
        assert other.exit_code == EXIT_FAILED, other.output
        assert f"the agent at {url} answered /v1/operations with something that is not JSON" in other.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_the_client_file_names_the_ca_beside_it(new_rig: Callable[..., Rig], client_file: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ca = make_ca(tmp_path, "agent")
    (client_file.parent / "agent-ca.pem").write_bytes(ca.ca_file.read_bytes())
    with serving(new_rig(), tls=ca) as api:
        monkeypatch.setenv("AGENT_TOKEN", api.tokens["read"])
        client_file.write_text(f"url: {api.url}\ntoken: env:AGENT_TOKEN\nca_file: agent-ca.pem\n")
        result = run_cli("ops", "list")
        assert result.exit_code == EXIT_OK, result.output
        assert f"no operations at the agent {api.url}" in result.stdout
