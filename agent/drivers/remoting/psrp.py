"""The ``psrp`` transport: PowerShell remoting over WSMan with pypsrp.

Each endpoint gets one runspace pool, owned by one worker thread: pypsrp's ``WSMan`` holds a
single ``requests`` session and one stateful auth/encryption context, and nothing in it is
locked, so a pool is only ever touched by the thread that opened it. Calls to an endpoint queue
up on its worker. A pool idle for longer than :data:`IDLE_S`, or one whose connection broke, is
dropped and the next call opens a new one.

The script text sent is the shipped script, unchanged; every value travels as a bound parameter
(``PowerShell.add_script(text).add_parameter(name, value)``), which PSRP carries as CLIXML data
and never parses as PowerShell. The answer is the last output object: the JSON document the
script printed.

What a failure becomes:

* the pipeline failed (a terminating error) → :class:`RemoteScriptError` with the error's
  ``FullyQualifiedErrorId``;
* error records without a failed pipeline (non-terminating errors) → the call still answers,
  and the records are logged and attached to the answer under ``"_error_stream"`` (a list of
  ``{id, message}``) so a caller can report them;
* the wire broke (reset, refused, read timeout, HTTP 5xx, a WinRM quota fault) →
  :class:`~agent.errors.TransientError`, so the engine retries;
* the call ran longer than ``timeout_s`` → :class:`~agent.errors.TimeoutError_`;
* authentication refused → :class:`RemoteAuthError` (permanent);
* the HTTPS certificate is not trusted → permanent (validation is on unless the endpoint says
  ``cert_validation: false``; ``ca_file`` names the CA bundle).

The double hop: a script run on the VMM server that calls Hyper-V cmdlets with ``-ComputerName``
needs CredSSP or Kerberos delegation. The agent instead connects straight to each Hyper-V host
(its own endpoint), so no credential is ever delegated.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from agent.config import Endpoint
from agent.drivers.remoting import PsScript, RemoteScriptError, check_parameters
from agent.drivers.remoting.answers import error_stream, last_json
from agent.errors import AgentError, PermanentError, TimeoutError_, TransientError

log = logging.getLogger(__name__)

IDLE_S = 300.0
"""A pool unused this long is closed and reopened on the next call (WinRM's own shell idle
timeout would otherwise kill it under us)."""

# WSMan fault codes that mean "the host is busy, ask again": shell quotas and the operation timeout.
_TRANSIENT_FAULTS = {2150859173, 2150859174, 2150858793, 2150859046, 2150859135}


class RemoteAuthError(PermanentError):
    """The endpoint refused the agent's credentials."""

    code = "remote_auth_failed"


def wsman_options(endpoint: Endpoint) -> dict[str, Any]:
    """The ``pypsrp.wsman.WSMan`` keyword arguments for ``endpoint`` (secrets resolved here)."""
    cert_validation: bool | str = endpoint.cert_validation
    if endpoint.cert_validation and endpoint.ca_file is not None:
        cert_validation = str(endpoint.ca_file)
    options: dict[str, Any] = {
        "port": endpoint.port, "ssl": endpoint.ssl, "auth": endpoint.auth, "cert_validation": cert_validation,
        "connection_timeout": endpoint.connect_timeout_s,
        # pypsrp needs the read timeout above the WSMan operation timeout.
        "operation_timeout": endpoint.operation_timeout_s, "read_timeout": endpoint.operation_timeout_s + 10,
        "no_proxy": True,
    }
    if endpoint.auth == "certificate":
        options["certificate_pem"] = str(endpoint.client_cert)
        options["certificate_key_pem"] = str(endpoint.client_key)
    else:
        options["username"] = endpoint.username
        options["password"] = endpoint.credential.reveal() if endpoint.credential is not None else None
    if endpoint.auth == "basic" and not endpoint.ssl:
        options["encryption"] = "never"  # basic cannot wrap messages; test servers only
    return options


def classify(exc: BaseException, endpoint: Endpoint, script: PsScript) -> Exception:
    """The agent error for a pypsrp/requests failure of ``script`` at ``endpoint``."""
    import requests
    from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

    if isinstance(exc, AgentError):  # ours already (a secret that does not resolve, a timeout)
        return exc
    where = {"host": endpoint.address, "script": script.name}
    if isinstance(exc, AuthenticationError):
        return RemoteAuthError(f"{endpoint.address} refused the credentials of {endpoint.username} "
                               f"({endpoint.auth})", **where)
    if isinstance(exc, WSManFaultError):
        code = int(exc.code) if str(exc.code).isdigit() else None
        reason = str(exc.reason or exc)
        if code in _TRANSIENT_FAULTS or "QUOTA" in reason.upper():
            return TransientError(f"{endpoint.address} is busy (WSMan fault {code}): {reason}", **where)
        return PermanentError(f"{endpoint.address} refused {script.name} (WSMan fault {code}): {reason}",
                              wsman_fault=code, **where)
    if isinstance(exc, WinRMTransportError):
        status = int(getattr(exc, "code", 0) or 0)
        if status >= 500 or status in (408, 429):
            return TransientError(f"{endpoint.address} answered HTTP {status}", http_status=status, **where)
        return PermanentError(f"{endpoint.address} answered HTTP {status}", http_status=status, **where)
    if isinstance(exc, requests.exceptions.Timeout):
        return TimeoutError_(f"{endpoint.address} did not answer in time ({exc.__class__.__name__})", **where)
    if isinstance(exc, requests.exceptions.SSLError):
        return PermanentError(f"the HTTPS certificate of {endpoint.address} is not trusted: {exc}", **where)
    if isinstance(exc, requests.exceptions.RequestException | ConnectionError | OSError):
        return TransientError(f"the connection to {endpoint.address} failed: {exc.__class__.__name__}: {exc}",
                              **where)
    return TransientError(f"the PSRP session with {endpoint.address} broke: {exc.__class__.__name__}: {exc}",
                          **where)


class _Worker:
    """One endpoint's thread and the runspace pool only it touches."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        self.pool: Any = None
        self.last_used = 0.0
        self.thread = threading.Thread(target=self._loop, name=f"psrp-{endpoint.address}", daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[[], Any]) -> Any:
        done: Future[Any] = Future()
        self.jobs.put((fn, done))
        return done.result()

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            fn, done = job
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the caller's thread
                done.set_exception(exc)
        self._drop()

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=30)

    # Only ever called on the worker thread.
    def open_pool(self) -> Any:
        from pypsrp.powershell import RunspacePool
        from pypsrp.wsman import WSMan

        if self.pool is not None and time.monotonic() - self.last_used > IDLE_S:
            self._drop()
        if self.pool is None:
            wsman = WSMan(self.endpoint.address or "", **wsman_options(self.endpoint))
            pool = RunspacePool(wsman)
            try:
                pool.open()
            except BaseException:
                wsman.close()
                raise
            self.pool = pool
        self.last_used = time.monotonic()
        return self.pool

    def _drop(self) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        try:
            pool.close()
        except Exception as exc:  # a broken pool cannot always say goodbye
            log.debug("closing the PSRP pool of %s failed: %s", self.endpoint.address, exc)
        with contextlib.suppress(Exception):
            pool.connection.close()

    def broken(self) -> None:
        self._drop()


def invoke(pool: Any, script: PsScript, parameters: Mapping[str, Any], timeout_s: float | None) -> Any:
    """Run ``script`` on ``pool``; the pypsrp ``PowerShell`` once it is no longer running."""
    from pypsrp.powershell import PowerShell, PSInvocationState

    ps = PowerShell(pool)
    ps.add_script(script.text)
    for name, value in parameters.items():
        ps.add_parameter(name, value)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    ps.begin_invoke()
    while ps.state == PSInvocationState.RUNNING:
        if deadline is not None and time.monotonic() > deadline:
            try:
                ps.stop()
            finally:
                raise TimeoutError_(f"{script.name} did not finish within {timeout_s} s", script=script.name)
        ps.poll_invoke()
    return ps


def release(worker: _Worker, ps: Any) -> None:
    """Terminate the finished pipeline (WSMan Signal terminate), as a WinRM client must: until
    then the server keeps the command, and pypsrp keeps the ``PowerShell`` -- every output it
    received -- in its pool's registry. Unreleased, a long-lived pool held every answer it ever
    got (at 10,000 VMs, hundreds of MB of inventories) and the server as many open commands.
    The answer is already in hand: a failed terminate costs the pool, not the call."""
    try:
        ps.close()
    except Exception as exc:
        log.debug("terminating a finished pipeline at %s failed: %s", worker.endpoint.address, exc)
        worker.broken()


class PsrpRemote:
    """:class:`~agent.drivers.remoting.Remote` over PSRP: one worker and pool per endpoint."""

    def __init__(self) -> None:
        self._workers: dict[Endpoint, _Worker] = {}
        self._lock = threading.Lock()

    def _worker(self, endpoint: Endpoint) -> _Worker:
        with self._lock:
            # Every setting is part of the key: a changed CA file or credential is a new pool.
            if endpoint not in self._workers:
                self._workers[endpoint] = _Worker(endpoint)
            return self._workers[endpoint]

    def run(self, endpoint: Endpoint, script: PsScript, parameters: Mapping[str, Any], *,
            timeout_s: float | None = None) -> Any:
        check_parameters(script, parameters)
        worker = self._worker(endpoint)
        bound = {k: list(v) if isinstance(v, tuple) else v for k, v in parameters.items()}

        def call() -> Any:
            try:
                ps = invoke(worker.open_pool(), script, bound, timeout_s)
            except TimeoutError_:
                worker.broken()
                raise
            except Exception as exc:
                worker.broken()
                raise classify(exc, endpoint, script) from exc
            release(worker, ps)
            return ps

        ps = worker.submit(call)
        return answer_of(ps, endpoint, script)

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.stop()


def answer_of(ps: Any, endpoint: Endpoint, script: PsScript) -> Any:
    """The document ``ps`` printed, or the script's terminating error."""
    errors = [{"id": getattr(e, "fq_error", None) or "unknown", "message": str(e)} for e in ps.streams.error]
    if ps.had_errors:
        first = errors[-1] if errors else {"id": "unknown", "message": "the pipeline failed"}
        raise RemoteScriptError(f"{script.name} failed at {endpoint.address}: {first['message']}",
                                script=script.name, host=endpoint.address, fully_qualified_error_id=first["id"])
    return error_stream(last_json(ps.output, script), errors, script, endpoint.address)
