"""What every transport does with what a script printed: the last output is the JSON document;
error records that did not stop the script are reported with it, never dropped."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from agent.drivers.remoting import PsScript, RemoteScriptError

log = logging.getLogger(__name__)

ERROR_STREAM = "_error_stream"
"""The answer key holding the non-terminating errors of the run (``[{id, message}]``)."""


def last_json(output: Sequence[Any], script: PsScript) -> Any:
    """The script's answer: its last output object, a JSON string, parsed."""
    if not output:
        raise RemoteScriptError(f"{script.name} printed nothing (it must print one JSON document)",
                                script=script.name)
    last = output[-1]
    if not isinstance(last, str):
        raise RemoteScriptError(f"{script.name} printed a {type(last).__name__}, not a JSON string",
                                script=script.name)
    try:
        return json.loads(last)
    except ValueError as exc:
        raise RemoteScriptError(f"{script.name} printed something that is not JSON: {exc}",
                                script=script.name) from None


def error_stream(answer: Any, errors: list[dict[str, str]], script: PsScript, host: str | None) -> Any:
    """``answer`` with the run's non-terminating ``errors`` attached (and logged)."""
    if not errors:
        return answer
    for error in errors:
        log.warning("%s at %s wrote an error and went on: %s (%s)", script.name, host, error["message"], error["id"])
    if isinstance(answer, dict):
        answer = {**answer, ERROR_STREAM: errors}
    return answer
