"""Dashboard tests: real site processes, the real server, and Debian's Chromium via Playwright."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "fastapi", reason="the dashboard tests need the ui extra: pip install 'dalang[ui]'"
)

from _ui_helpers import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, TOKEN, demo_configs

import dalang as dl


@pytest.fixture(scope="module")
def fed() -> Iterator[dl.Federation]:
    root = Path(tempfile.mkdtemp(prefix="dalang-ui-test-"))
    with dl.Federation.local(demo_configs(root)) as federation:
        yield federation
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def dashboard(fed: dl.Federation) -> Iterator[Any]:
    from dalang.ui.app import DashboardServer
    from dalang.ui.state import DashboardState

    server = DashboardServer(DashboardState(fed), token=TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: install Debian's package "
            "(apt-get install -y chromium) or set DALANG_CHROMIUM"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []  # uncaught errors in the page's scripts, CSP violations included
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield page
    context.close()
    assert not errors, errors


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCREENSHOTS.exists() and any(SCREENSHOTS.glob("*.png")):
        terminalreporter.write_line(f"dashboard screenshots: {SCREENSHOTS}")
