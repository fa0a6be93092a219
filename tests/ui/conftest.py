"""Dashboard tests: real site processes, the real server, and Debian's Chromium via Playwright."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "fastapi", reason="the dashboard tests need the ui extra: pip install 'dalang[ui]'"
)

import dalang as dl
from dalang.demo_federated import site_configs

CHROMIUM = os.environ.get("DALANG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Where the page screenshots go (ignored by git); printed at the end of the run.
SCREENSHOTS = Path(__file__).with_name("screenshots")
#: The page's token in these tests.
TOKEN = "ui-test-token-0123456789"
#: Each demo site's privacy budget here: two queries of epsilon 0.5, the third is refused.
DP_BUDGET = 1.0


def demo_configs(root: Path) -> list[dict[str, Any]]:
    """The demo's three bank sites (small), with a small privacy budget and different
    audit sharing: branch_a shares its coordinator's entries, branch_b all, branch_c none."""
    configs = site_configs(root, transactions=3000)
    for config, share in zip(configs, ("own", "all", "none"), strict=True):
        config["datasets"]["transactions_dp"]["policy"]["epsilon_budget"] = DP_BUDGET
        config["site"]["audit_share"] = share
    return configs


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


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page: Any, url: str, token: str = TOKEN) -> None:
    """Log in through the form, as a user would."""
    page.goto(url + "/")
    page.fill("#login-token", token)
    page.click("#login-button")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCREENSHOTS.exists() and any(SCREENSHOTS.glob("*.png")):
        terminalreporter.write_line(f"dashboard screenshots: {SCREENSHOTS}")
