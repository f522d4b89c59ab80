"""No secret in any log line of the suite: every test's captured output (stdout, stderr and log
records, as pytest keeps them) is searched for the secrets the tests handed to the agent; a
test whose output holds one fails, naming where it was.

Secrets are registered where tests make them (``remember``): API tokens, TSIG keys, the PSRP
test server's password ... and an agent API token is recognised by its shape as well, wherever it
comes from: none may ever be logged."""

from __future__ import annotations

import re
import threading

import pytest

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
TOKEN_SHAPE = re.compile(r"fa_[A-Za-z0-9_-]{43}")
"""``agent.api.auth.new_token``: ``fa_`` and 32 random bytes, URL-safe base64."""


def remember(secret: str) -> str:
    if len(secret) >= 6:  # shorter values would match by chance
        with _LOCK:
            _SECRETS.add(secret)
    return secret


def leaks(text: str) -> list[str]:
    with _LOCK:
        known = list(_SECRETS)
    found = [f"a registered secret ({s[:2]}...)" for s in known if s in text]
    found += [f"an API token ({m[:6]}...)" for m in TOKEN_SHAPE.findall(text)]
    return found


def check(item: pytest.Item, report: pytest.TestReport) -> None:
    """Fail ``report`` if any captured section of it holds a secret."""
    for title, text in report.sections:
        found = leaks(text)
        if found:
            report.outcome = "failed"
            what = ", ".join(sorted(set(found)))
            report.longrepr = f"{item.nodeid}: {what} in '{title}': secrets must never be logged"
            return
