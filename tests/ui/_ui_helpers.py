"""What the dashboard tests share: the browser's settings, the demo sites, login, screenshots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
