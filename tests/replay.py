"""Recorded host answers (``tests/recordings/<area>/NAME.json``) played back as a Remote: each
call must be the recording's script, with parameters that fit its ``param()`` block and hold the
recorded values; it gets the next recorded answer, or the recorded fault (a transient fault of
the wire, or a terminating PowerShell error with its FullyQualifiedErrorId).

A test module subclasses :class:`Recorded` naming its ``directory`` (``exact``: the parameters
must be exactly the recorded ones, not only include them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from agent.config import Endpoint
from agent.drivers.remoting import PsScript, RemoteScriptError, check_parameters
from agent.errors import TransientError

RECORDINGS = Path(__file__).resolve().parent / "recordings"


class Recorded:
    directory: ClassVar[Path]
    exact: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.recording: dict[str, Any] = json.loads((self.directory / f"{name}.json").read_text(encoding="utf-8"))
        self.answers = list(self.recording["answers"])
        self.sent: list[dict[str, Any]] = []

    def run(self, endpoint: Endpoint, script: PsScript, parameters: Mapping[str, Any], *,
            timeout_s: float | None = None) -> Any:
        check_parameters(script, parameters)
        assert script.name == self.recording["script"]
        if self.exact:
            assert dict(parameters) == self.recording["parameters"]
        for name, value in self.recording["parameters"].items():
            assert parameters[name] == value, name
        self.sent.append(dict(parameters))
        answer = self.answers.pop(0)
        if answer.get("raise") == "transient":
            raise TransientError(answer["message"], script=script.name)
        if answer.get("raise") == "script":
            raise RemoteScriptError(answer["message"], script=script.name, fully_qualified_error_id=answer["id"])
        return answer

    def close(self) -> None:
        pass
