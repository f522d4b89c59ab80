"""Pages in a real headless Chromium (Debian's ``chromium``, driven by Playwright): what a browser
shows of the agent's HTML, and a screenshot kept as a test artifact (``test-artifacts/``, not in
git).

Chromium missing: the test skips with the reason -- except under ``CI=true``, where the CI image
is supposed to have it (``.ci/run`` installs it) and the test fails instead, so a green CI run
cannot have skipped every page test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
"""No sandbox (CI runs as root in a container), and nothing that phones home during a test."""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason}; CI=true, so the browser tests must run, not skip", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str:
    """Debian's Chromium; else skip (or fail under ``CI=true``) naming what is missing."""
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        _unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
        raise AssertionError("unreachable")  # pytest.skip and pytest.fail raise
    return path


@contextmanager
def chromium_page(*, width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A fresh page of a headless Chromium, closed afterwards."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # the 'test' extra installs it
        _unavailable("the playwright package is not installed (pip install '.[test]')")
        raise AssertionError("unreachable") from None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def artifact(name: str) -> Path:
    """Where a test keeps a file for the humans reading the CI run (``test-artifacts/NAME``)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
