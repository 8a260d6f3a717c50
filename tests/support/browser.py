"""A headless Chromium (Debian's ``chromium`` package) driven by Playwright, for the page tests.

Playwright's own browser downloads are never used: the browser is the system's, installed by
``make browser``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    sync_playwright,
)

from tests.support.paths import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
#: Where the screenshots go: the README's own images with ``make screenshots`` (which sets
#: ``WEB_SCREENSHOTS=docs``), else a folder of the test run, so a test run changes no file.
IMAGES = (
    ROOT / "docs" / "images"
    if os.environ.get("WEB_SCREENSHOTS") == "docs"
    else Path(tempfile.gettempdir()) / "ingestion-screenshots"
)


@contextmanager
def chromium() -> Iterator[Browser]:
    """The system's Chromium, headless; fails with the way to install it when it is missing."""
    if not CHROMIUM.exists():
        raise AssertionError(
            f"{CHROMIUM} is missing: run 'make browser' (apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    """A page of a fresh browser context, with every console error and page error it logged."""

    context: BrowserContext
    page: Page
    base: str
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def open(self, path: str = "/") -> Page:
        self.page.goto(self.base + path)
        return self.page

    def screenshot(self, name: str) -> Path:
        IMAGES.mkdir(parents=True, exist_ok=True)
        path = IMAGES / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def expect_problems(self, *fragments: str) -> None:
        """Forget the logged problems each holding one of ``fragments`` (provoked on purpose)."""
        self.problems[:] = [p for p in self.problems if not any(f in p for f in fragments)]


def open_tab(browser: Browser, base: str) -> Tab:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    page = context.new_page()
    tab = Tab(context, page, base)

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning", "assert"):
            tab.problems.append(f"console {message.type} at {page.url}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.problems.append(f"page error at {page.url}: {error}"))
    page.on("request", lambda request: tab.requests.append(request.url))
    return tab
