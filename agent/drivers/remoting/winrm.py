"""The ``winrm`` transport: a WinRM command shell (pywinrm) running the fixed wrapper.

pywinrm has no parameter binding, only a command line; :mod:`agent.drivers.remoting.wrapper`
explains how the values still travel as data: the command line is constant, the values
document goes to the process's stdin (``Send``), in chunks that stay below WinRM's default
MaxEnvelopeSize. One shell per call: pywinrm's ``Protocol`` is not thread-safe, and a call
holds it only for its own duration (the lock serialises calls to the same endpoint).
A call longer than its ``timeout_s`` is a :class:`~agent.errors.TimeoutError_`.

Failures map as in :mod:`agent.drivers.remoting.psrp`: a wire fault is transient, a script's
terminating error is a :class:`~agent.drivers.remoting.RemoteScriptError`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from agent.config import Endpoint
from agent.drivers.remoting import PsScript, check_parameters
from agent.drivers.remoting.wrapper import ARGUMENTS, read_result, values_document
from agent.errors import AgentError, PermanentError, TimeoutError_, TransientError

CHUNK = 128 * 1024
_AUTH = {"basic": "basic", "ntlm": "ntlm", "negotiate": "ntlm", "kerberos": "kerberos", "credssp": "credssp",
         "certificate": "certificate"}


def protocol_options(endpoint: Endpoint) -> dict[str, Any]:
    scheme = "https" if endpoint.ssl else "http"
    port = endpoint.port or (5986 if endpoint.ssl else 5985)
    options: dict[str, Any] = {
        "endpoint": f"{scheme}://{endpoint.address}:{port}/wsman",
        "transport": _AUTH[endpoint.auth],
        "server_cert_validation": "validate" if endpoint.cert_validation else "ignore",
        "operation_timeout_sec": int(endpoint.operation_timeout_s),
        "read_timeout_sec": int(endpoint.operation_timeout_s) + 10,
        "message_encryption": "never" if endpoint.auth == "basic" and not endpoint.ssl else "auto",
        "proxy": None,
    }
    if endpoint.ca_file is not None:
        options["ca_trust_path"] = str(endpoint.ca_file)
    if endpoint.auth == "certificate":
        options["cert_pem"], options["cert_key_pem"] = str(endpoint.client_cert), str(endpoint.client_key)
    else:
        options["username"] = endpoint.username
        options["password"] = endpoint.credential.reveal() if endpoint.credential is not None else None
    return options


def classify(exc: Exception, endpoint: Endpoint, script: PsScript) -> Exception:
    import requests
    from winrm.exceptions import InvalidCredentialsError, WinRMOperationTimeoutError, WinRMTransportError

    if isinstance(exc, AgentError):  # ours already (a secret that does not resolve, a timeout)
        return exc
    where = {"host": endpoint.address, "script": script.name}
    if isinstance(exc, InvalidCredentialsError):
        return PermanentError(f"{endpoint.address} refused the credentials of {endpoint.username}", **where)
    if isinstance(exc, WinRMOperationTimeoutError | requests.exceptions.Timeout):
        return TimeoutError_(f"{endpoint.address} did not answer in time", **where)
    if isinstance(exc, WinRMTransportError):
        status = int(getattr(exc, "code", 0) or 0)
        text = str(getattr(exc, "response_text", "") or exc)
        if status >= 500 and "QUOTA" not in text.upper() and "Fault" in text and "2150859" not in text:
            return PermanentError(f"{endpoint.address} refused {script.name} (HTTP {status}): {text[:300]}", **where)
        return TransientError(f"{endpoint.address} answered HTTP {status}", http_status=status, **where)
    if isinstance(exc, requests.exceptions.SSLError):
        return PermanentError(f"the HTTPS certificate of {endpoint.address} is not trusted: {exc}", **where)
    return TransientError(f"the WinRM connection to {endpoint.address} failed: {exc.__class__.__name__}: {exc}",
                          **where)


def _output(protocol: Any, shell: str, command: str, timeout_s: float | None,
            script: PsScript) -> tuple[bytes, bytes, int]:
    """The command's whole output; :class:`TimeoutError_` once ``timeout_s`` has passed
    (pywinrm's own loop waits for ever, retrying its operation timeouts)."""
    from winrm.exceptions import WinRMOperationTimeoutError

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    out: list[bytes] = []
    err: list[bytes] = []
    while True:
        try:
            stdout, stderr, code, done = protocol.get_command_output_raw(shell, command)
        except WinRMOperationTimeoutError:
            stdout, stderr, code, done = b"", b"", -1, False
        out.append(stdout)
        err.append(stderr)
        if done:
            return b"".join(out), b"".join(err), code
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError_(f"{script.name} did not finish within {timeout_s} s", script=script.name)


class WinrmRemote:
    def __init__(self) -> None:
        self._locks: dict[str | None, threading.Lock] = {}
        self._guard = threading.Lock()

    def run(self, endpoint: Endpoint, script: PsScript, parameters: Mapping[str, Any], *,
            timeout_s: float | None = None) -> Any:
        from winrm.protocol import Protocol

        check_parameters(script, parameters)
        document = values_document(script, parameters)
        with self._guard:
            lock = self._locks.setdefault(endpoint.address, threading.Lock())
        with lock:
            try:
                protocol = Protocol(**protocol_options(endpoint))
                shell = protocol.open_shell(codepage=65001)
                try:
                    command = protocol.run_command(shell, "powershell.exe", list(ARGUMENTS))
                    for start in range(0, len(document), CHUNK):
                        chunk = document[start:start + CHUNK]
                        protocol.send_command_input(shell, command, chunk, end=start + CHUNK >= len(document))
                    stdout, stderr, code = _output(protocol, shell, command, timeout_s, script)
                    protocol.cleanup_command(shell, command)
                finally:
                    protocol.close_shell(shell)
            except TimeoutError_:
                raise
            except Exception as exc:
                raise classify(exc, endpoint, script) from exc
        return read_result(stdout, stderr, code, script, endpoint.address)

    def close(self) -> None:
        pass
