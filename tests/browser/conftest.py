"""Browser tests: Debian's Chromium driven by Playwright against an embedded server on a free port.

Playwright's own browser download cannot run on these machines, so the tests launch
``/usr/bin/chromium`` (installed by ``.ci/run``) and are skipped, saying why, where it is absent.
Screenshots of every page go to ``test-artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from libs.common import api_keys
from tests.e2e.support import embedded_server

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
# Without the background-networking flags Chromium keeps trying Google's hosts, which this
# machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@dataclass(frozen=True)
class Server:
    url: str
    admin_key: str


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        why = "Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)"
        if os.environ.get("REPOTALK_REQUIRE_BROWSER") == "1":  # CI: a skipped browser test would prove nothing
            pytest.fail(why)
        pytest.skip(why)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def server(base_env: dict[str, str]) -> Iterator[Server]:
    """The whole of repotalk embedded (sample_repo indexed, sandbox channel) and an admin API key."""
    with embedded_server() as url:
        yield Server(url=url, admin_key=api_keys.create_key("console-test"))


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def browser_phone(browser: Browser) -> Iterator[Page]:
    """A phone-sized tab (375 px wide, as an iPhone SE or mini)."""
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()
