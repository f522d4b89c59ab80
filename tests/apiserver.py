"""A real agent API for tests: uvicorn on 127.0.0.1 at a free port, serving a rig (the demo's
simulated sites and a store), called with a real HTTP client (httpx).

Tokens of each scope are made here and their hashes put in the rig's config, as an operator
would with ``failover-agent token create``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import uvicorn

from agent.api.app import create_app
from agent.api.auth import new_token, token_hash
from agent.api.served import Served
from agent.configapi import Api, ApiToken
from agent.engine.model import FINAL_STATUSES, OpStatus
from tests.rigs import Rig

SCOPED = ("read", "operate", "admin")
SETTLED = {s.value for s in FINAL_STATUSES} | {OpStatus.FAILED.value, OpStatus.WAITING.value}


@dataclass
class ApiServer:
    url: str
    tokens: dict[str, str]
    """Scope -> a token of exactly that scope."""
    served: Served
    server: uvicorn.Server

    def client(self, scope: str | None = "operate", **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[scope]}"} if scope else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def wait(self, client: httpx.Client, op_id: str, *, until: Callable[[dict[str, Any]], bool] | None = None,
             timeout_s: float = 60) -> dict[str, Any]:
        """Poll ``GET /v1/operations/{id}`` until it settles (or ``until`` holds)."""
        deadline = time.monotonic() + timeout_s
        while True:
            r = client.get(f"/v1/operations/{op_id}")
            r.raise_for_status()
            op: dict[str, Any] = r.json()
            done = until(op) if until is not None else (op["status"] in SETTLED and op_id not in self.served.running())
            if done:
                return op
            if time.monotonic() > deadline:
                raise AssertionError(f"{op_id} still {op['status']} after {timeout_s} s")
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def with_tokens(rig: Rig, tokens: dict[str, str] | None = None) -> dict[str, str]:
    """Give ``rig``'s config one token per scope (new ones, or ``tokens``); returns them."""
    tokens = tokens or {scope: new_token() for scope in SCOPED}
    api = Api(tokens=[ApiToken(name=f"{scope}-caller", sha256=token_hash(t), scopes=[scope])  # type: ignore[list-item]
                      for scope, t in tokens.items()])
    rig.loaded = replace(rig.loaded, config=rig.loaded.config.model_copy(update={"api": api}))
    return tokens


@contextmanager
def serving(rig: Rig, *, leader: Any = None, tokens: dict[str, str] | None = None,
            tls: Any = None) -> Iterator[ApiServer]:
    """``tokens``: reuse these (one config for several agents); ``tls``: the server speaks HTTPS,
    as under ``api.tls``, with a ``tests.psrpserver.TestCa``'s server certificate or a
    (certificate, key) pair of PEM files."""
    tokens = with_tokens(rig, tokens)
    served = Served(rig.loaded, rig.store, rig.engine, leader)
    app = create_app(served)
    port = free_port()
    if tls is not None and hasattr(tls, "cert_file"):
        tls = (tls.cert_file, tls.key_file)
    options: dict[str, Any] = {} if tls is None else {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off",
                                           **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test API server did not start")
        time.sleep(0.01)
    try:
        yield ApiServer(f"{'https' if tls is not None else 'http'}://127.0.0.1:{port}", tokens, served, server)
    finally:
        served.stop(30)
        server.should_exit = True
        thread.join(10)
