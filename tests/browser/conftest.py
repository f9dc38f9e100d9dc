"""Browser tests of the harness inbox: Debian's Chromium driven by Playwright (never a downloaded browser).

Without a chromium executable the tests skip with the reason; with OUTBOX_REQUIRE_CHROMIUM=1 (CI sets it
once it has installed the package) a missing browser fails instead. The outbox side runs for real: the
e2e stack (harness + Azurite + a local Functions host over function_app) sends every message.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.conftest import stack, stack_factory  # noqa: F401 - the e2e stack fixtures, reused

REQUIRED = os.environ.get("OUTBOX_REQUIRE_CHROMIUM") == "1"
VIEWPORT = {"width": 1600, "height": 900}


def chromium_executable() -> str | None:
    for candidate in (os.environ.get("OUTBOX_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      "/usr/bin/chromium"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"OUTBOX_REQUIRE_CHROMIUM=1 but {reason}")
    pytest.skip(reason)


# Module scope, not session: while Playwright's sync API is open, its event loop counts as running in this
# thread, and a later test's asyncio.run() would refuse to start.
@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    executable = chromium_executable()
    if executable is None:
        _unavailable("no chromium executable (Debian: apt-get install chromium; or set OUTBOX_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """A page with everything it did that a test may want to deny: dialogs, console lines, script errors."""

    page: Any
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def pwned(self) -> Any:
        """Set by every payload the hostile tests carry, if any of them ever runs."""
        return self.page.evaluate("() => window.top.__pwned")


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Watched]:
    # The inbox serves the harness's test CA certificate, which this fresh browser profile does not trust.
    context = chromium.new_context(ignore_https_errors=True, viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    watched = Watched(page)

    def on_dialog(dialog: Any) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda message: watched.console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    page.set_default_timeout(10_000)
    try:
        yield watched
    finally:
        context.close()
