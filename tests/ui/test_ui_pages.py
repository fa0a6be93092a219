"""The dashboard in a real browser, against the real server and three real site processes.

Every check compares what the page shows with what the Federation API returns.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from _ui_helpers import TOKEN, login, screenshot

import dalang as dl

pytestmark = pytest.mark.xdist_group("ui")


def test_the_api_refuses_a_wrong_token(dashboard: Any) -> None:
    url = dashboard.url
    assert httpx.get(f"{url}/api/sites").status_code == 401
    assert (
        httpx.get(f"{url}/api/datasets", headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert httpx.post(f"{url}/api/login", json={"token": "wrong-token"}).status_code == 401
    assert httpx.post(f"{url}/api/query", json={"sql": "SELECT 1"}).status_code == 401
    assert (
        httpx.get(f"{url}/api/sites", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
        == 200
    )
    page = httpx.get(f"{url}/")
    assert (
        page.status_code == 200
        and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    )
    # a forged cookie is no session
    assert httpx.get(f"{url}/api/sites", cookies={"dalang_ui_session": "0" * 64}).status_code == 401


def _client(dashboard: Any, request: pytest.FixtureRequest) -> httpx.Client:
    """An API client with the token, closed when the test ends."""
    client = httpx.Client(base_url=dashboard.url, headers={"Authorization": f"Bearer {TOKEN}"})
    request.addfinalizer(client.close)
    return client


def test_builder_mistakes_and_refusals_are_clear(
    dashboard: Any, request: pytest.FixtureRequest
) -> None:
    api = _client(dashboard, request)
    bad_op = {"dataset": "transactions", "filters": [{"column": "amount", "op": "~", "value": 1}]}
    r = api.post("/api/pipeline/code", json={"pipeline": bad_op})
    assert r.status_code == 400, r.text
    assert "filters[0].op" in r.json()["message"] and ">=" in r.json()["message"]
    typo = {
        "dataset": "transactions",
        "group_by": ["chanel"],
        "aggregates": [{"name": "n", "fn": "count", "column": "*"}],
    }
    r = api.post("/api/query", json={"pipeline": typo}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "ColumnNotFound" and "'channel'" in r.json()["message"]
    # raw rows of an aggregates-only dataset: refused, naming the dataset and its policy
    r = api.post("/api/query", json={"pipeline": {"dataset": "transactions"}}, timeout=30)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "PolicyViolation"
    assert r.json()["dataset"] == "transactions" and r.json()["policy"] == "aggregates"
    across = {
        "dataset": "transactions",
        "join": {"dataset": "customers", "on": "customer_id", "scope": "across"},
        "group_by": ["segment"],
        "aggregates": [{"name": "n", "fn": "count"}],
    }
    r = api.post("/api/query", json={"pipeline": across}, timeout=30)
    assert r.status_code == 403, r.text
    assert "would leave the site" in r.json()["message"]
    assert r.json()["policy"] == "aggregates"


def test_a_site_config_says_what_audit_sharing_means() -> None:
    from dalang.federation.config import ConfigError, config_from_dict

    doc = {"site": {"name": "s", "tokens": ["sha256:" + "0" * 64], "audit_share": "some"}}
    with pytest.raises(ConfigError, match="none, own, all"):
        config_from_dict(doc)
    doc["site"]["audit_share"] = "all"
    assert config_from_dict(doc).audit_share == "all"
    del doc["site"]["audit_share"]
    assert config_from_dict(doc).audit_share == "own"


def test_wrong_token_in_the_login_form(dashboard: Any, page: Any) -> None:
    url = dashboard.url
    login(page, url, token="wrong-token")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "401" in page.inner_text("#login-error")
    assert page.is_hidden("#nav")
    assert page.is_hidden("#page-sites")
    screenshot(page, "login-refused")


def test_sites_and_datasets_pages(dashboard: Any, fed: dl.Federation, page: Any) -> None:
    login(page, dashboard.url)
    page.wait_for_selector("#sites-table tbody tr")
    screenshot(page, "sites")
    for site in fed.sites:
        row = page.locator(f'#sites-table tr[data-site="{site}"]')
        assert row.get_attribute("data-status") == "up"
        info = fed.site_info(site)
        cells = row.locator("td").all_inner_texts()
        assert cells[1] == "up"
        assert cells[2].endswith("ms")
        assert cells[3] == info["version"]
        assert cells[4] == ", ".join(info["platforms"])
        assert cells[5] == str(info["datasets"])
        assert cells[6] == info["location"]

    page.click('nav a[data-page="datasets"]')
    page.wait_for_selector("#datasets-table tbody tr")
    screenshot(page, "datasets")
    published = fed.datasets()
    assert page.locator("#datasets-table tbody tr").count() == len(published)
    for d in published:
        row = page.locator(f'#datasets-table tr[data-site="{d.site}"][data-dataset="{d.name}"]')
        cells = row.locator("td").all_inner_texts()
        assert cells[2] == d.policy["egress"]
        # row counts only where the site's policy publishes them
        assert cells[4] == (str(d.rows) if d.rows is not None else "not published")
        for field in d.schema:
            assert f"{field.name}: {field.type}" in cells[7]
        shown = {"egress", "min_group_size", "trainers", "epsilon_budget", "epsilon_spent"}
        for key, value in d.policy.items():
            if key not in shown and value not in (None, [], {}):
                assert f"{key}=" in cells[8]
        if d.policy["egress"] == "dp":
            assert f"epsilon_per_query={d.policy['epsilon_per_query']}" in cells[8]
            left = d.policy["epsilon_budget"] - d.policy["epsilon_spent"]
            assert f"{left:.2f} left of {d.policy['epsilon_budget']:.2f}" in cells[5]
        else:
            assert cells[5] == "—"


def _builder_pipeline(page: Any) -> None:
    page.click('nav a[data-page="workbench"]')
    page.wait_for_selector("#b-dataset option[value=transactions]", state="attached")
    page.select_option("#b-dataset", "transactions")
    page.select_option("#b-join", "customers")
    page.select_option("#b-join-on", "customer_id")
    page.click("#b-add-filter")
    row = page.locator("#b-filters .filter").last
    row.locator(".f-column").select_option("amount")
    row.locator(".f-op").select_option(">")
    row.locator(".f-value").fill("10")
    row.locator(".f-value").dispatch_event("change")
    page.check('#b-group input[value="segment"]')
    page.click("#b-add-agg")
    agg = page.locator("#b-aggs .aggregate").last
    agg.locator(".a-name").fill("n")
    agg.locator(".a-name").dispatch_event("change")
    page.click("#b-add-agg")
    agg = page.locator("#b-aggs .aggregate").last
    agg.locator(".a-name").fill("total")
    agg.locator(".a-fn").select_option("sum")
    agg.locator(".a-column").select_option("amount")


def _result_rows(page: Any) -> list[list[str]]:
    return [r.locator("td").all_inner_texts() for r in page.locator("#result-table tbody tr").all()]


def test_pipeline_builder_runs_and_draws_the_plan(
    dashboard: Any, fed: dl.Federation, page: Any
) -> None:
    login(page, dashboard.url)
    page.wait_for_selector("#nav:not([hidden])")
    _builder_pipeline(page)
    # (no wait_for_function: it evaluates strings, which the page's CSP rightly forbids)
    page.locator("#b-code", has_text="dl.col('amount').sum()").wait_for()
    code = page.inner_text("#b-code")
    page.click("#run-pipeline")
    page.wait_for_selector("#result[data-state=ok]", timeout=60_000)
    screenshot(page, "workbench-pipeline")

    # the same pipeline, built here through the Federation API
    expected = (
        fed.at_each_site(
            lambda site: site.table("transactions").join(site.table("customers"), on="customer_id")
        )
        .filter(dl.col("amount") > 10)
        .group_by("segment")
        .agg(n=dl.count(), total=dl.col("amount").sum())
        .sort("segment")
        .collect()
    )
    shown = _result_rows(page)
    headers = page.locator("#result-table thead th").all_inner_texts()
    assert headers == ["segment", "n", "total"]
    assert [r[0] for r in shown] == [e["segment"] for e in expected]
    assert [int(r[1]) for r in shown] == [e["n"] for e in expected]
    assert [float(r[2]) for r in shown] == pytest.approx([e["total"] for e in expected])

    # the Python the page shows builds the same result
    namespace: dict[str, Any] = {"fed": fed}
    exec(code.replace("result.collect()", "rows = result.collect()"), namespace)
    got = namespace["rows"]
    assert [(r["segment"], r["n"]) for r in got] == [(e["segment"], e["n"]) for e in expected]
    assert [r["total"] for r in got] == pytest.approx([e["total"] for e in expected])

    # the placed plan: every site runs its part, the merge runs at the coordinator
    for site in fed.sites:
        nodes = page.locator(f'#plan-graph g.plan-node[data-site="{site}"]')
        assert nodes.count() >= 3  # two scans, the join and the partial aggregate
        assert "actual 3" in " ".join(nodes.all_text_contents())  # 3 segments leave each site
    assert page.locator('#plan-graph g.plan-node[data-site=""]').count() >= 1
    assert page.locator("#plan-graph .edge-bytes").count() == len(fed.sites)
    assert "rows: est" in (page.text_content("#plan-text") or "")
    meta = page.inner_text("#result-meta")
    assert f"{len(expected)} rows" in meta
    assert f"from {len(fed.sites)} site fragment(s)" in meta


def test_refused_query_shows_in_jobs_and_audit(
    dashboard: Any, fed: dl.Federation, page: Any
) -> None:
    login(page, dashboard.url)
    page.wait_for_selector("#nav:not([hidden])")
    page.click('nav a[data-page="workbench"]')
    page.click('.tab[data-tab="sql"]')
    page.fill("#sql", "SELECT count(*) AS n FROM transactions_dp")
    # each query spends epsilon 0.5 of a budget of 1.0 at every site: one of the first
    # three is refused by the sites (which ones pass depends on what other tests spent)
    for _ in range(3):
        page.click("#run-sql")
        page.wait_for_selector("#result[data-state=ok], #result[data-state=error]")
        if page.get_attribute("#result", "data-state") == "error":
            break
    assert "BudgetExhausted" in page.inner_text("#result-error")
    screenshot(page, "workbench-refused")

    page.click('nav a[data-page="jobs"]')
    page.wait_for_selector("#jobs-table tbody tr[data-status=refused]")
    screenshot(page, "jobs")
    refused_job = page.locator("#jobs-table tbody tr[data-status=refused]").first
    assert "BudgetExhausted" in refused_job.inner_text()
    assert page.locator("#jobs-table tbody tr[data-status=ok]").count() >= 1

    page.click('nav a[data-page="audit"]')
    page.wait_for_selector(".audit-site")
    screenshot(page, "audit")
    for site in fed.sites:
        box = page.locator(f'.audit-site[data-site="{site}"]')
        if site == "branch_c":  # shares nothing: the coordinator sees no entries
            assert "does not share its audit log" in box.inner_text()
            assert box.locator("tbody tr").count() == 0
            continue
        log = fed.audit_log(site)
        assert log["verify"]["ok"]
        assert box.get_attribute("data-chain") == "ok"
        refused = [e for e in log["entries"] if e["status"] == "refused"]
        assert any("BudgetExhausted" in e.get("reason", "") for e in refused)
        rows = box.locator("tbody tr[data-status=refused]")
        assert rows.count() >= 1
        assert any("BudgetExhausted" in t for t in rows.locator(".reason").all_inner_texts())
    # branch_b shares every entry, branch_a only those of this coordinator's token
    assert fed.audit_log("branch_b")["share"] == "all"
    assert fed.audit_log("branch_a")["share"] == "own"

    page.check("#audit-refused")
    page.locator(".audit-site tbody tr:not([data-status=refused])").first.wait_for(state="detached")
    assert page.locator(".audit-site tbody tr[data-status=refused]").count() >= 2


def _open_training_form(page: Any, url: str) -> None:
    """Log in and fill the Training form: amount -> is_fraud on transactions."""
    login(page, url)
    page.wait_for_selector("#nav:not([hidden])")
    page.click('nav a[data-page="training"]')
    page.wait_for_selector("#t-dataset option[value=transactions]", state="attached")
    page.select_option("#t-dataset", "transactions")
    page.check('#t-features input[value="amount"]')
    page.select_option("#t-label", "is_fraud")


def test_training_run_updates_its_chart(dashboard: Any, fed: dl.Federation, page: Any) -> None:
    _open_training_form(page, dashboard.url)
    page.select_option("#t-trainer", "logistic_regression")
    page.fill("#t-rounds", "3")
    assert page.evaluate("window.dalangChart") is None
    # note the chart's size each time a round arrives: it must grow one round at a time
    page.evaluate(
        """() => {
        window.chartSizes = [];
        new MutationObserver(() => window.chartSizes.push(window.dalangChart.data.labels.length))
          .observe(document.querySelector('#rounds-table tbody'), {childList: true});
        }"""
    )
    page.click("#t-start")
    page.wait_for_selector("#t-status[data-status=ok]")
    screenshot(page, "training")

    run_id = page.get_attribute("#t-live", "data-run")
    run = dashboard.state.runs[run_id]  # what fed.train handed to on_round
    assert run.status == "ok"
    assert [r["round"] for r in run.rounds] == [1, 2, 3]
    chart = page.evaluate(
        "({labels: window.dalangChart.data.labels,"
        " loss: window.dalangChart.data.datasets[0].data,"
        " accuracy: window.dalangChart.data.datasets[1].data})"
    )
    assert chart["labels"] == [1, 2, 3]
    assert [n for n in page.evaluate("window.chartSizes") if n] == [1, 2, 3]
    assert chart["loss"] == pytest.approx([r["metrics"]["loss"] for r in run.rounds])
    assert chart["accuracy"] == pytest.approx([r["metrics"]["accuracy"] for r in run.rounds])
    rows = page.locator("#rounds-table tbody tr")
    assert rows.count() == 3
    for i, r in enumerate(run.rounds):
        assert rows.nth(i).locator(".sites").inner_text() == ", ".join(r["sites"])
    assert sorted(run.rounds[0]["sites"]) == sorted(fed.sites)
    assert run.run_id in page.inner_text("#t-status")

    page.click('nav a[data-page="jobs"]')
    page.wait_for_selector("#jobs-table tbody tr[data-kind=training][data-status=ok]")


def test_jobs_outlive_the_dashboard(fed: dl.Federation, tmp_path: Any) -> None:
    from dalang.errors import PolicyViolation
    from dalang.ui.state import DashboardState

    path = tmp_path / "ui-jobs.jsonl"
    first = DashboardState(fed, jobs_file=path)
    query = fed.table("transactions").group_by("channel").agg(n=dl.count())
    result = first.run_query("by channel", lambda: query)
    with pytest.raises(PolicyViolation):
        first.run_query("raw rows", lambda: fed.table("transactions"))
    second = DashboardState(fed, jobs_file=path)
    assert [(j.title, j.status) for j in second.jobs] == [
        ("by channel", "ok"),
        ("raw rows", "refused"),
    ]
    assert second.jobs[0].bytes == result["bytes_moved"] > 0
    assert second.new_job("query", "next").id == 3


def test_private_training_shows_epsilon_per_round(
    dashboard: Any, fed: dl.Federation, page: Any
) -> None:
    _open_training_form(page, dashboard.url)
    page.fill("#t-rounds", "3")
    page.check("#t-secure")
    page.select_option("#t-dp", "central")
    page.fill("#t-noise", "1.5")
    page.click("#t-start")
    page.wait_for_selector("#t-status[data-status=ok]")
    screenshot(page, "training-private")
    run = dashboard.state.runs[page.get_attribute("#t-live", "data-run")]
    assert run.spec["secure_aggregation"] is True
    assert run.spec["privacy"]["noise_multiplier"] == 1.5
    assert "secure aggregation, central DP" in page.inner_text("#t-title")
    epsilons = [r["epsilon"] for r in run.rounds]
    assert len(epsilons) == 3 and epsilons[0] > 0 and epsilons == sorted(epsilons)
    shown = page.locator("#rounds-table tbody tr td:nth-child(7)").all_inner_texts()
    assert shown == [f"{e:.3f}" for e in epsilons]


@pytest.mark.parametrize(
    "spec",
    [
        {"dataset": "transactions", "aggregates": [{"name": "n", "fn": "count"}]},
        {
            "dataset": "transactions",
            "filters": [
                {"column": "channel", "op": "!=", "value": "atm"},
                {"column": "amount", "op": "<=", "value": 500.5},
            ],
            "group_by": ["channel"],
            "aggregates": [
                {"name": "low", "fn": "min", "column": "amount"},
                {"name": "high", "fn": "max", "column": "amount"},
                {"name": "mean", "fn": "mean", "column": "amount"},
            ],
            "limit": 2,
            "allow_partial": True,
        },
        {  # egress "rows" on both sides: rows of every site meet at the coordinator
            "dataset": "branch",
            "join": {"dataset": "branch", "on": "site", "scope": "across"},
            "group_by": ["storage"],
            "aggregates": [{"name": "n", "fn": "count"}],
        },
    ],
    ids=["count", "filters-group-limit", "join-across-sites"],
)
def test_the_python_shown_is_the_query_run(
    dashboard: Any, fed: dl.Federation, spec: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    api = _client(dashboard, request)
    answer = api.post("/api/query", json={"pipeline": spec}, timeout=30)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    namespace: dict[str, Any] = {"fed": fed}
    exec(doc["python"].replace("result.collect()", "rows = result.collect()"), namespace)
    names = [c["name"] for c in doc["columns"]]
    expected = [[row[n] for n in names] for row in namespace["rows"]]
    assert len(doc["rows"]) == len(expected) == doc["row_count"]
    for got, want in zip(doc["rows"], expected, strict=True):
        assert [v for v in got if isinstance(v, str)] == [v for v in want if isinstance(v, str)]
        assert [v for v in got if not isinstance(v, str)] == pytest.approx(
            [v for v in want if not isinstance(v, str)]
        )


def test_a_bug_answers_json_and_the_app_keeps_serving(
    dashboard: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = _client(dashboard, request)

    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(dashboard.state, "sql_tables", broken)
    answer = api.post("/api/query", json={"sql": "SELECT 1 AS x"})
    assert answer.status_code == 500
    assert answer.json() == {
        "error": "RuntimeError",
        "message": "unexpected error in the dashboard",
    }
    assert api.get("/api/sites").status_code == 200
