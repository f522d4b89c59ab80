"""Simulated recovery-plan script runs (:class:`agent.ports.Scripts`).

A script "runs" on a simulated Hyper-V host: the call is recorded (so tests count it), takes
the latency model's time, and fails only through fault injection (``fault: permanent`` makes the
script report failure, ``timeout`` stops it). Parameters are echoed in the result's output and
printed on its stdout so a test can see exactly what was bound.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agent.errors import NotFoundError
from agent.ports import ScriptResult

if TYPE_CHECKING:
    from agent.drivers.sim.state import State
    from agent.drivers.sim.world import SimWorld


class SimScripts:
    def __init__(self, world: SimWorld) -> None:
        self._world = world

    def run_script(self, host: str, path: str, parameters: dict[str, Any], timeout_s: float) -> ScriptResult:
        started = time.monotonic()

        def run(st: State) -> tuple[ScriptResult, list[str]]:
            _check_host(st, host)
            # What a script typically prints: what it was given (a real one's own words vary).
            printed = "".join(f"{name} = {value}\n" for name, value in parameters.items())
            return ScriptResult(host=host, path=path, succeeded=True, output={"parameters": parameters},
                                stdout=f"{path} on {host}\n{printed}",
                                duration_s=round(time.monotonic() - started, 3)), [f"{host}:{path}"]

        try:
            return self._world._single("script.run", host, [host, path], run, mutating=True,
                                       keys=[f"{host}:{path}"])
        except Exception as exc:
            code = getattr(exc, "code", "")
            if code == "injected_fault":
                return ScriptResult(host=host, path=path, succeeded=False, error=str(exc),
                                    duration_s=round(time.monotonic() - started, 3))
            raise

    def probe(self, host: str) -> str:
        """Runs nothing; ``not_found`` for an unknown host, fault rules match ``script.probe``."""

        def run(st: State) -> tuple[str, list[str]]:
            _check_host(st, host)
            return f"simulated host {host} can run scripts", []

        return self._world._single("script.probe", host, [host], run, mutating=False)


def _check_host(st: State, host: str) -> None:
    if not any(host in site["hosts"] for site in st["sites"].values()):
        raise NotFoundError(f"no Hyper-V host {host}", host=host)
