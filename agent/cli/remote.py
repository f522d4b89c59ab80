"""The CLI against a running agent (``failover-agent serve``): where it is and the token to show
it, and a small HTTP client of its API whose errors are the CLI's own.

The agent's URL and token come from ``--agent-url`` / ``--token``, else ``$FAILOVER_AGENT_URL`` /
``$FAILOVER_AGENT_TOKEN``, else the user's client file (``~/.config/failover-agent/client.yaml``,
or the file ``$FAILOVER_AGENT_CLIENT_CONFIG`` names)::

    url: https://vmm01.contoso.local:8740
    token: file:/home/alice/.config/failover-agent/token   # or env:NAME, or the token itself
    ca_file: /etc/pki/contoso-ca.pem                        # optional: the CA of the agent's certificate

A token written in the file itself is a credential at rest: the file must then be readable by its
owner alone (mode 0600), or it is refused. Any URL given turns remote mode on: the commands that
would open the store ask the agent instead, and none reads a config file.

An answer of the API's (``application/problem+json``) becomes an :class:`AgentError` with the
agent's code and fields, in the family that gives the CLI's exit code: 4xx refused (2), 503 and a
lost connection unreachable (3), anything else failed (1).
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from agent.configrules import Model
from agent.errors import AgentError, RefusedError, TimeoutError_, UnreachableError, make_error

if TYPE_CHECKING:
    import httpx

ENV_URL = "FAILOVER_AGENT_URL"
ENV_TOKEN = "FAILOVER_AGENT_TOKEN"
ENV_CLIENT_FILE = "FAILOVER_AGENT_CLIENT_CONFIG"

WAITING = "waiting_for_manual_action"
FINAL = ("succeeded", "partially_succeeded", "cancelled")

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
"""A call (and a quiet event stream: a long step sends nothing) waits this long for bytes; an event
stream then reconnects, as it does when the connection drops."""
RECONNECT_FOR_S = 30.0
"""How long a lost event stream (or a start) is tried again before the CLI says it cannot reach the agent."""


class NotConnected(UnreachableError):
    """No connection was made: the request never reached the agent."""


class ClientFile(Model):
    """The user's client file: where the agent is and how to show it a token."""

    url: str | None = Field(default=None, min_length=1, max_length=2000)
    token: str | None = Field(default=None, min_length=1, max_length=4000)
    """``env:NAME``, ``file:PATH``, or the token itself (then the file must be mode 0600)."""
    ca_file: Path | None = None


@dataclass(frozen=True)
class RemoteAgent:
    """A running agent this CLI talks to, and where each setting came from."""

    url: str
    token: str | None = field(repr=False)
    ca_file: Path | None
    url_from: Literal["option", "env", "file"]
    client_file: Path | None = None

    @property
    def repeat_options(self) -> str:
        """What a command line shown to the user needs to reach the same agent again."""
        return f"--agent-url {self.url} " if self.url_from == "option" else ""


# ------------------------------------------------------------------------------ where


def client_file_path() -> tuple[Path, bool]:
    """The client file, and whether the user named it ($FAILOVER_AGENT_CLIENT_CONFIG)."""

    named = os.environ.get(ENV_CLIENT_FILE)
    if named:
        return Path(named).expanduser(), True
    if os.name == "nt" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "failover-agent" / "client.yaml", False
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "failover-agent" / "client.yaml", False


def _read_client_file() -> tuple[ClientFile, Path | None]:
    from agent.yamlfile import load_model

    path, named = client_file_path()
    if not path.is_file():
        if named:
            raise RefusedError(f"${ENV_CLIENT_FILE} names {path}, which is not a file", file=str(path))
        return ClientFile(), None
    found = load_model(path, ClientFile)
    if found.token and not found.token.startswith(("env:", "file:")):
        _refuse_open_file(path)
    if found.ca_file is not None and not found.ca_file.is_absolute():
        found = found.model_copy(update={"ca_file": path.parent / found.ca_file})
    return found, path


def _refuse_open_file(path: Path) -> None:
    """A token written in the file is refused unless only its owner can read the file."""

    if os.name == "nt":  # no POSIX modes: the ACL of the user's profile protects it
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise RefusedError(f"{path} holds a token and can be read by {'others' if mode & 0o007 else 'its group'} "
                           f"(mode {mode:04o}): make it readable by you alone (chmod 600 {path}), or write "
                           "'token: env:NAME' or 'token: file:PATH' there instead", file=str(path), key="token")


def remote_agent(config: Path | None = None) -> RemoteAgent | None:
    """The agent to talk to, when a URL is given (option, environment or client file); None: work
    locally. ``config``: the command's --config, which a remote command cannot use."""

    from agent.cli.app import root_option

    url: str | None = root_option("agent_url")
    url_from: Literal["option", "env", "file"] = "option"
    if not url and os.environ.get(ENV_URL):
        url, url_from = os.environ[ENV_URL], "env"
    token: str | None = root_option("token") or os.environ.get(ENV_TOKEN)
    file, file_path = _read_client_file() if not url or not token else (ClientFile(), None)
    if not url and file.url:
        url, url_from = file.url, "file"
    if not url:
        return None
    if config is not None:
        raise RefusedError(f"--config {config} and the agent at {url} (from {_said(url_from, file_path)}): the "
                           "agent uses its own config; drop one of them", url=url)
    # The file's token is for the file's agent: never sent to another URL given on the command line.
    if not token and file.token and (not file.url or file.url.rstrip("/") == url.rstrip("/")):
        token = file.token
    ca_file = root_option("ca_file") or file.ca_file
    return RemoteAgent(_checked_url(url, url_from, file_path), _revealed(token), ca_file, url_from, file_path)


def _said(url_from: str, file_path: Path | None) -> str:
    return {"option": "--agent-url", "env": f"${ENV_URL}"}.get(url_from, str(file_path))


def _checked_url(url: str, url_from: str, file_path: Path | None) -> str:
    from agent.configapi import is_loopback

    parts = urlsplit(url)
    where = _said(url_from, file_path)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedError(f"{where}: {url!r} is not an agent URL; write http://HOST:PORT (on this machine) or "
                           "https://HOST:PORT", url=url)
    if parts.scheme == "http" and not is_loopback(parts.hostname.strip("[]")):
        raise RefusedError(f"{where}: {url} is plain HTTP to another machine: the token would cross the network "
                           "in clear; use https:// (the agent serves TLS with api.tls)", url=url)
    return url.rstrip("/")


def _revealed(token: str | None) -> str | None:
    if token is None or not token.startswith(("env:", "file:")):
        return token
    from agent.config import SecretRef

    return SecretRef(token).reveal()


# ----------------------------------------------------------------------------- client


class AgentClient:
    """The API of one agent, over one connection pool; every failure is an :class:`AgentError`."""

    def __init__(self, agent: RemoteAgent) -> None:
        import httpx

        self.agent = agent
        headers = {"Authorization": f"Bearer {agent.token}"} if agent.token else {}
        verify: Any = True
        if agent.ca_file is not None:
            import ssl

            try:
                verify = ssl.create_default_context(cafile=str(agent.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise RefusedError(f"--ca-file {agent.ca_file}: not a readable PEM bundle of CA certificates "
                                   f"({exc})", file=str(agent.ca_file)) from exc
        self._http = httpx.Client(base_url=agent.url, headers=headers, verify=verify,
                                  timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self.send("GET", path, params={k: v for k, v in params.items() if v is not None}))

    def post(self, path: str, body: dict[str, Any] | None = None, **headers: str) -> Any:
        return self._json(self.send("POST", path, json=body or {}, headers=headers))

    def text(self, path: str, **params: Any) -> str:
        return self.send("GET", path, params=params).text

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            raise self.problem(response)
        return response

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise AgentError(f"the agent at {self.agent.url} answered {response.request.url.path} with something "
                             f"that is not JSON (HTTP {response.status_code})", url=self.agent.url) from exc

    def _transport_error(self, exc: httpx.TransportError) -> AgentError:
        import httpx

        url = self.agent.url
        reason = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason:
            return RefusedError(f"the agent at {url} shows a certificate this machine does not trust ({reason}); "
                                "give the CA that issued it with --ca-file (or ca_file in the client file)", url=url)
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return TimeoutError_(f"the agent at {url} did not answer within {READ_TIMEOUT_S:g} s ({reason})", url=url)
        kind = NotConnected if isinstance(exc, httpx.ConnectError) else UnreachableError
        return kind(f"cannot reach the agent at {url}: {reason} (is 'failover-agent serve' running there, and is "
                    "this its api.host and api.port?)", url=url)

    def problem(self, response: httpx.Response) -> AgentError:
        """The agent's refusal (problem+json) as the error the CLI reports, with its exit code."""

        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        code = str(body.get("code") or f"http_{status}")
        detail = str(body.get("detail") or body.get("title") or f"HTTP {status} from {response.request.url.path}")
        fields = {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail", "code", "category")}
        if status == 401:
            detail += (f" (the agent at {self.agent.url}); give a token of it with --token, ${ENV_TOKEN} or the "
                       "client file ('failover-agent token create' on the agent's machine makes one)")
        elif status == 403:
            detail += f" (the agent at {self.agent.url})"
        if status in (502, 503, 504) or body.get("category") == "transient":
            category: Literal["refused", "transient", "permanent"] = "transient"
        elif 400 <= status < 500:
            category = "refused"  # nothing was changed: the request was turned down
        else:
            category = "permanent"
        return make_error(code, category, detail, **fields)

    # ---------------------------------------------------------------------- events

    def events(self, op_id: str) -> Iterator[dict[str, Any]]:
        """The operation's snapshots from its event stream, reconnecting when the stream drops or
        stays quiet, until the operation settles (ends, fails, or waits for someone)."""

        import httpx

        lost_since: float | None = None
        while True:
            try:
                with self._http.stream("GET", f"/v1/operations/{op_id}/events",
                                       headers={"Accept": "text/event-stream"}) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise self.problem(response)
                    for data in _sse(response.iter_lines()):
                        lost_since = None
                        yield data
                        if settled(data):
                            return
            except httpx.TransportError as exc:
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > RECONNECT_FOR_S:
                    raise self._transport_error(exc) from exc
                time.sleep(1.0)
                continue
            # The stream ended at a state that is not settled for a watcher (a resume just asked,
            # not yet picked up by its worker): look again shortly.
            time.sleep(0.2)


def _sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


def settled(op: dict[str, Any]) -> bool:
    """Nothing more happens to ``op`` until someone acts: it ended, failed, or waits at a step."""

    status = op.get("status")
    if status in FINAL or status == "failed":
        return True
    return status == WAITING and any(s.get("status") == "waiting" for s in op.get("steps", []))


def started(client: AgentClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/operations with an Idempotency-Key of its own, sent again with the same key while
    the connection fails: a start that reached the agent before the connection dropped is found,
    not made twice."""

    import uuid

    key = f"cli-{uuid.uuid4()}"
    deadline = time.monotonic() + RECONNECT_FOR_S
    sent = False
    while True:
        try:
            op: dict[str, Any] = client.post("/v1/operations", body, **{"Idempotency-Key": key})
            return op
        except NotConnected:
            if not sent or time.monotonic() > deadline:
                raise  # never reached the agent: nothing can have started
            time.sleep(1.0)
        except (UnreachableError, TimeoutError_):
            sent = True  # it may have reached the agent: ask again with the same key
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
