"""The ``local`` transport: ``powershell.exe`` on this machine (the agent on the VMM server).

The process is started with the fixed wrapper command line of
:mod:`agent.drivers.remoting.wrapper` and the values document on stdin, exactly as the
``winrm`` transport runs it remotely. :data:`EXECUTABLE` is what is started; tests put a fake
there (a Python program that does what the wrapper documents), which proves the framing and the
constant command line here -- not Windows PowerShell's own handling of it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from typing import Any

from agent.config import Endpoint
from agent.drivers.remoting import PsScript, check_parameters
from agent.drivers.remoting.wrapper import ARGUMENTS, read_result, values_document
from agent.errors import TimeoutError_, TransientError

EXECUTABLE: list[str] = ["powershell.exe"]


class LocalRemote:
    def __init__(self, executable: list[str] | None = None) -> None:
        self.executable = list(executable or EXECUTABLE)

    def run(self, endpoint: Endpoint, script: PsScript, parameters: Mapping[str, Any], *,
            timeout_s: float | None = None) -> Any:
        check_parameters(script, parameters)
        try:
            done = subprocess.run([*self.executable, *ARGUMENTS], input=values_document(script, parameters),
                                  capture_output=True, timeout=timeout_s or endpoint.operation_timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise TimeoutError_(f"{script.name} did not finish in time on this machine", script=script.name) from None
        except OSError as exc:
            raise TransientError(f"cannot start {self.executable[0]}: {exc.strerror}", script=script.name) from exc
        return read_result(done.stdout, done.stderr, done.returncode, script, "localhost")

    def close(self) -> None:
        pass
