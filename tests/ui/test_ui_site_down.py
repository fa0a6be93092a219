"""A site that goes down shows as down; the rest of the dashboard keeps working."""

from __future__ import annotations

import os
import signal
import time
import warnings
from typing import Any

import pytest
from _ui_helpers import TOKEN, screenshot

import dalang as dl
from dalang.federation.coordinator import PartialResult

pytestmark = pytest.mark.xdist_group("ui")

DOWN = "branch_c"


def test_a_site_that_hangs(
    dashboard: Any, fed: dl.Federation, page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dalang.ui import state

    # the server runs in this process: shorter waits keep the test short
    monkeypatch.setattr(state, "HEALTH_TIMEOUT_S", 1.0)
    monkeypatch.setattr(state, "SITE_WAIT_S", 2.0)
    hung = "branch_b"
    process = fed.processes[hung]
    os.kill(process.pid, signal.SIGSTOP)  # alive, but answers nothing
    try:
        page.goto(f"{dashboard.url}/#token={TOKEN}")
        row = page.locator(f'#sites-table tr[data-site="{hung}"]')
        row.wait_for()
        assert row.get_attribute("data-status") == "down"
        assert page.locator("#sites-table tr[data-status=up]").count() == len(fed.sites) - 1

        started = time.monotonic()
        page.click('nav a[data-page="datasets"]')
        page.wait_for_selector(f'#datasets-table tr[data-site="{hung}"]')
        assert time.monotonic() - started < state.SITE_WAIT_S + 5
        cells = page.locator(f'#datasets-table tr[data-site="{hung}"] td:first-child')
        assert all("down" in t for t in cells.all_inner_texts())

        page.click('nav a[data-page="audit"]')
        page.wait_for_selector(f'.audit-site[data-site="{hung}"] .error')
        assert "no answer" in page.inner_text(f'.audit-site[data-site="{hung}"]')
        assert page.locator('.audit-site[data-site="branch_a"][data-chain=ok]').count() == 1
    finally:
        os.kill(process.pid, signal.SIGCONT)
    # once it answers again, so does the page
    page.click('nav a[data-page="sites"]')
    page.locator(f'#sites-table tr[data-site="{hung}"][data-status=up]').wait_for()


def test_a_site_that_went_down(dashboard: Any, fed: dl.Federation, page: Any) -> None:
    process = fed.processes[DOWN]
    process.kill()
    process.wait(timeout=10)

    # the token in the URL's fragment logs in (it never reaches the server's logs)
    page.goto(f"{dashboard.url}/#token={TOKEN}")
    page.wait_for_selector(f'#sites-table tr[data-site="{DOWN}"]')
    screenshot(page, "sites-one-down")
    for site in fed.sites:
        row = page.locator(f'#sites-table tr[data-site="{site}"]')
        assert row.get_attribute("data-status") == ("down" if site == DOWN else "up")
    assert "unavailable" in page.locator(f'#sites-table tr[data-site="{DOWN}"]').inner_text()
    assert "token=" not in page.url

    # datasets: the live sites answer, the down one keeps what it last published
    page.click('nav a[data-page="datasets"]')
    page.wait_for_selector("#datasets-table tbody tr")
    rows = page.locator(f'#datasets-table tr[data-site="{DOWN}"]')
    assert rows.count() > 0
    assert all("down" in t for t in rows.locator("td:first-child").all_inner_texts())
    live = [d for d in fed.datasets(refresh=False) if d.site != DOWN]
    assert page.locator("#datasets-table tbody tr").count() == len(live) + rows.count()

    # a query over every site names the one that is down ...
    page.click('nav a[data-page="workbench"]')
    page.click('.tab[data-tab="sql"]')
    page.fill("#sql", "SELECT channel, count(*) AS n FROM transactions GROUP BY channel")
    page.click("#run-sql")
    page.wait_for_selector("#result[data-state=error]")
    error = page.inner_text("#result-error")
    assert "SiteUnavailable" in error and DOWN in error

    # ... and, when asked to, leaves it out and says so
    page.check("#sql-partial")
    page.click("#run-sql")
    page.wait_for_selector("#result[data-state=ok]", timeout=60_000)
    screenshot(page, "workbench-partial")
    assert DOWN in page.inner_text("#result-meta")
    up = [s for s in fed.sites if s != DOWN]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialResult)
        expected = (
            fed.table("transactions", sites=up).group_by("channel").agg(n=dl.count()).collect()
        )
    shown = {
        r.locator("td").nth(0).inner_text(): int(r.locator("td").nth(1).inner_text())
        for r in page.locator("#result-table tbody tr").all()
    }
    assert shown == {e["channel"]: e["n"] for e in expected}

    # audit and jobs still work; the down site's log cannot be fetched
    page.click('nav a[data-page="audit"]')
    page.wait_for_selector(f'.audit-site[data-site="{DOWN}"] .error')
    assert "SiteUnavailable" in page.inner_text(f'.audit-site[data-site="{DOWN}"]')
    assert page.locator(".audit-site[data-chain=ok]").count() == len(up)
    page.click('nav a[data-page="jobs"]')
    page.wait_for_selector("#jobs-table tbody tr[data-status=ok]")
    assert page.locator("#jobs-table tbody tr[data-status=error]").count() == 1
