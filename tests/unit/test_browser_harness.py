"""The browser tests' own rule: without Chromium they skip on a developer's machine and fail
under CI=true, where the image must have it (a green CI run may not have skipped the pages)."""

from __future__ import annotations

import pytest

import tests.browser as browser


@pytest.fixture
def no_chromium(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("PATH", "/nonexistent")


@pytest.mark.usefixtures("no_chromium")
def test_a_missing_chromium_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Chromium is not installed"):
        browser.chromium_path()


@pytest.mark.usefixtures("no_chromium")
def test_a_missing_chromium_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true, so the browser tests must run"):
        browser.chromium_path()
