"""Issue 17: the Dashboard, the Integrations page and the JSON API, through Starlette's test
client, on a home whose warehouse the real pipeline filled from the emulator (two integrations,
Dagster in-process) and whose snapshot was published from it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from starlette.testclient import TestClient

from grafient_pipeline.dashboard.app import create_app
from grafient_pipeline.dashboard.jobs import JobRunner
from grafient_pipeline.providers.openai.emulator import CostsEmulator
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings, load_settings
from grafient_pipeline.snapshot import publish_snapshot
from grafient_pipeline.sync import utc_today
from tests.conftest import (
    ADMIN_KEY,
    MASTER_KEY,
    ORG_ID,
    OTHER_KEY,
    OTHER_ORG_ID,
    last_days,
    run_range,
)

THIRD_ORG, THIRD_KEY = "org-test-three", "sk-admin-test-three-0123456789abcdefghijklmnopqrstu"
CENT = Decimal("0.01")


@dataclass
class Home:
    settings: Settings
    emulator: CostsEmulator
    ids: list[str]


class FakeJobs(JobRunner):
    """Records submissions instead of starting worker processes."""

    def __init__(self) -> None:
        super().__init__({})
        self.submitted: list[tuple[str, str]] = []

    def submit(self, kind: str, integration_id: str, *args: str):
        self.submitted.append((kind, integration_id))
        return super().submit("noop-" + kind, integration_id, *args)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    root = tmp_path_factory.mktemp("dash")
    orgs = {ORG_ID: ADMIN_KEY, OTHER_ORG_ID: OTHER_KEY, THIRD_ORG: THIRD_KEY}
    with CostsEmulator(orgs, seed=5) as emulator, pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAFIENT_HOME", str(root / "home"))
        mp.setenv("GRAFIENT_OPENAI_BASE_URL", emulator.base_url)
        mp.setenv("GRAFIENT_MASTER_KEY", MASTER_KEY)
        mp.setenv("GRAFIENT_DAGSTER_URL", "http://127.0.0.1:9")
        mp.delenv("GRAFIENT_WAREHOUSE", raising=False)
        settings = load_settings()
        registry = Registry.from_settings(settings)
        ids = [
            registry.add("Acme Prod", "pro", ADMIN_KEY, organization_id=ORG_ID).id,
            registry.add("Beta Labs", "pro", OTHER_KEY, organization_id=OTHER_ORG_ID).id,
        ]
        with dg.instance_for_test() as instance:
            for integration_id in ids:
                dates = last_days(40, utc_today())
                assert run_range(settings, instance, integration_id, dates).success
        publish_snapshot(settings.warehouse, settings.snapshot_path)
        yield Home(settings, emulator, ids)


@pytest.fixture
def jobs() -> FakeJobs:
    return FakeJobs()


@pytest.fixture
def client(home: Home, jobs: FakeJobs) -> Iterator[TestClient]:
    with TestClient(create_app(home.settings, jobs=jobs)) as test_client:
        yield test_client


def csrf_of(client: TestClient, path: str = "/integrations") -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get(path).text)
    assert found
    return found.group(1)


def sql(settings: Settings, query: str, *params) -> list[tuple]:
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        return conn.execute(query, list(params)).fetchall()


def cents(value: Decimal) -> str:
    return f"${value.quantize(CENT, rounding=ROUND_HALF_UP):,}"


# --- the Dashboard ---------------------------------------------------------------------------


def test_dashboard_totals_equal_the_sql_views(home: Home, client: TestClient):
    ((mtd,),) = sql(home.settings, "SELECT coalesce(sum(amount_usd), 0) FROM v_month_to_date")
    yesterday = utc_today() - timedelta(days=1)
    ((day,),) = sql(
        home.settings,
        "SELECT coalesce(sum(amount_usd), 0) FROM v_daily_costs WHERE cost_date = ?",
        yesterday,
    )
    page = client.get("/").text
    assert f'id="kpi-mtd">{cents(mtd)}<' in page
    assert f'id="kpi-yesterday">{cents(day)}<' in page

    summary = client.get("/api/summary").json()
    assert Decimal(summary["month_to_date_usd"]) == mtd  # every decimal place
    assert Decimal(summary["yesterday"]["amount_usd"]) == day
    assert summary["published_at"] and summary["forecast"] is None


@pytest.mark.parametrize("days", [30, 90])
def test_daily_charts_equal_v_daily_costs(home: Home, client: TestClient, days: int):
    start = utc_today() - timedelta(days=days - 1)
    expected = dict(
        sql(
            home.settings,
            "SELECT cost_date, sum(amount_usd) FROM v_daily_costs WHERE cost_date >= ? "
            "GROUP BY ALL",
            start,
        )
    )
    for by in ("model", "token_type"):
        daily = client.get(f"/api/daily?days={days}&by={by}").json()
        assert len(daily["days"]) == days and daily["days"][-1] == utc_today().isoformat()
        got = {d: Decimal(t) for d, t in zip(daily["days"], daily["totals"], strict=True)}
        assert {d: t for d, t in got.items() if t} == {
            k.isoformat(): v for k, v in expected.items() if v
        }
        for n, day in enumerate(daily["days"]):  # the series add up to the day's total
            assert sum(Decimal(s["amounts_usd"][n]) for s in daily["series"]) == got[day]


def test_filter_by_integration_and_provider(home: Home, client: TestClient):
    one = home.ids[1]
    ((mtd,),) = sql(
        home.settings,
        "SELECT coalesce(sum(amount_usd), 0) FROM v_month_to_date WHERE integration_id = ?",
        one,
    )
    assert Decimal(client.get(f"/api/summary?integration={one}").json()["month_to_date_usd"]) == mtd
    everything = client.get("/api/summary?provider=openai").json()["month_to_date_usd"]
    assert everything == client.get("/api/summary").json()["month_to_date_usd"]
    nothing = client.get("/api/summary?provider=anthropic").json()["month_to_date_usd"]
    assert Decimal(nothing) == 0
    page = client.get(f"/?integration={one}&days=90").text
    assert f'<option value="{one}" selected>Beta Labs</option>' in page
    assert 'value="90" class="autosubmit" checked' in page


def test_top_models_projects_and_keys(home: Home, client: TestClient):
    top = client.get("/api/top?days=30").json()
    start = utc_today() - timedelta(days=29)
    expected = sql(
        home.settings,
        "SELECT project_id, sum(amount_usd) AS usd FROM fct_costs WHERE cost_date >= ? "
        "GROUP BY ALL ORDER BY usd DESC LIMIT 3",
        start,
    )
    assert [(p["id"], Decimal(p["amount_usd"])) for p in top["projects"][:3]] == expected
    assert len(top["models"]) == 10 and len(top["api_keys"]) == 10
    page = client.get("/").text
    for heading in ("Top models", "Top projects", "Top API keys"):
        assert heading in page


def test_names_from_dim_tables_when_they_exist(home: Home, client: TestClient, tmp_path: Path):
    """dim_projects / dim_api_keys (issue 15, filled by each sync) give names, escaped; an id
    without a name is shown as the id."""
    top = client.get("/api/top").json()
    project, key = top["projects"][0], top["api_keys"][0]
    assert project["name"] != project["id"]  # the emulator's project names, read by the sync
    copy = tmp_path / "warehouse.duckdb"
    copy.write_bytes(Path(home.settings.warehouse).read_bytes())
    with duckdb.connect(str(copy)) as conn:
        conn.execute(
            "UPDATE dim_projects SET name = 'Search <b>' WHERE project_id = ?", [project["id"]]
        )
        conn.execute(
            "UPDATE dim_api_keys SET name = 'ci-bot', redacted_value = 'sk-...wxyz' "
            "WHERE api_key_id = ?",
            [key["id"]],
        )
        conn.execute("DELETE FROM dim_projects WHERE project_id <> ?", [project["id"]])
    publish_snapshot(copy, tmp_path / "snapshot.duckdb")
    settings = load_settings({"GRAFIENT_HOME": str(tmp_path)})
    with TestClient(create_app(settings, jobs=FakeJobs())) as other:
        named = other.get("/api/top").json()
        page = other.get("/").text
    assert any(p["name"] == "Search <b>" for p in named["projects"])
    assert any(k["name"] == "ci-bot" and "sk-...wxyz" in k["detail"] for k in named["api_keys"])
    assert "Search &lt;b&gt;" in page and "Search <b>" not in page
    unnamed = [p for p in named["projects"] if p["id"] != project["id"]]
    assert all(p["name"] == p["id"] for p in unnamed)  # no name known: the id stands in


def test_intelligence_panels(home: Home, client: TestClient, tmp_path: Path):
    page = client.get("/").text
    assert page.count("Not computed yet") >= 3  # forecast, budgets, anomalies
    assert client.get("/api/anomalies").json() == {"computed": False, "anomalies": []}

    copy = tmp_path / "warehouse.duckdb"
    copy.write_bytes(Path(home.settings.warehouse).read_bytes())
    month = f"{utc_today():%Y-%m}"
    with duckdb.connect(str(copy)) as conn:
        conn.execute(
            "CREATE TABLE spend_forecast AS SELECT ? AS month, 'total' AS series, "
            "1234.5::DECIMAL(38, 16) AS forecast_usd, 1000::DECIMAL(38,16) AS low_usd, "
            "1500::DECIMAL(38,16) AS high_usd",
            [month],
        )
        conn.execute(
            "CREATE TABLE budget_status AS SELECT ? AS month, 'Research' AS budget_name, "
            "85.5 AS percent_used, 855::DECIMAL(38,16) AS spend_usd, "
            "1000::DECIMAL(38,16) AS monthly_usd, 'warning' AS status",
            [month],
        )
        conn.execute(
            "CREATE TABLE spend_anomalies AS SELECT current_date AS day, "
            "'gpt-4o <img src=x>' AS series, 90::DECIMAL(38,16) AS actual_usd, "
            "10::DECIMAL(38,16) AS expected_usd, 80::DECIMAL(38,16) AS impact_usd, "
            "'spike' AS direction"
        )
    publish_snapshot(copy, tmp_path / "snapshot.duckdb")
    settings = load_settings({"GRAFIENT_HOME": str(tmp_path)})
    with TestClient(create_app(settings, jobs=FakeJobs())) as other:
        page = other.get("/").text
        summary = other.get("/api/summary").json()
        anomalies = other.get("/api/anomalies").json()
    assert "$1,234.50" in page and "range $1,000.00 – $1,500.00" in page
    assert "Research" in page and "85.5%" in page
    assert "gpt-4o &lt;img src=x&gt;" in page
    assert Decimal(summary["forecast"]["month_end_usd"]) == Decimal("1234.5")
    assert anomalies["computed"] and anomalies["anomalies"][0]["direction"] == "spike"


def test_without_a_snapshot_the_pages_say_how_to_get_data(tmp_path: Path):
    settings = load_settings({"GRAFIENT_HOME": str(tmp_path)})
    with TestClient(create_app(settings, jobs=FakeJobs())) as other:
        page = other.get("/")
        api = other.get("/api/summary")
    assert page.status_code == 200 and "No data yet" in page.text
    assert api.status_code == 404 and "no snapshot yet" in api.json()["error"]


def test_the_page_is_cached_per_snapshot(home: Home, client: TestClient):
    client.get("/?days=180")
    started = time.perf_counter()
    for _ in range(20):
        assert client.get("/?days=180").status_code == 200
    assert (time.perf_counter() - started) / 20 < 0.25  # no queries: the built view is reused


# --- the Integrations page -------------------------------------------------------------------


def test_cards_show_status_plan_organization_and_the_masked_key(home: Home, client: TestClient):
    page = client.get("/integrations").text
    for label, org in (("Acme Prod", ORG_ID), ("Beta Labs", OTHER_ORG_ID)):
        assert f"<h2>{label}</h2>" in page and org in page
    assert "sk-admin-...wxyz" in page and "sk-admin-...3210" in page
    assert ADMIN_KEY not in page and OTHER_KEY not in page
    listed = client.get("/api/integrations").json()
    assert {i["id"] for i in listed} >= set(home.ids)
    assert all("key_token" not in i for i in listed)


def test_the_add_form_names_each_providers_key_prefix(client: TestClient):
    page = client.get("/integrations").text
    assert "OpenAI: <code>sk-admin-…</code>" in page
    assert "Anthropic: <code>sk-ant-admin…</code>" in page
    assert 'data-key-prefix="sk-ant-admin"' in page


def test_test_key_shows_the_organization_or_the_error(home: Home, client: TestClient):
    csrf = csrf_of(client)
    headers = {"X-CSRF-Token": csrf}
    good = client.post("/api/test-key", json={"key": THIRD_KEY}, headers=headers).json()
    assert good["ok"] and good["organization_id"] == THIRD_ORG
    bad_key = "sk-admin-wrong-0123456789abcdefghijklmnopqrstuvwxyz"
    bad = client.post("/api/test-key", json={"key": bad_key}, headers=headers)
    assert not bad.json()["ok"] and bad.json()["message"]
    assert bad_key not in bad.text
    empty = client.post("/api/test-key", json={"key": " "}, headers=headers).json()
    assert not empty["ok"] and "paste" in empty["message"]


def test_add_integration_then_its_backfill_starts(home: Home, client: TestClient, jobs: FakeJobs):
    csrf = csrf_of(client)
    form = {"csrf_token": csrf, "provider": "openai", "label": "", "plan": "free", "key": THIRD_KEY}
    response = client.post("/integrations", data=form, follow_redirects=False)
    assert response.status_code == 303
    page = client.get(response.headers["location"]).text
    assert THIRD_KEY not in response.text + page
    new_id = Registry.from_settings(home.settings).list()[-1].id
    assert jobs.submitted == [("backfill", new_id)]
    assert f"Added {new_id}: its 30-day backfill is running" in page
    assert f'id="card-{new_id}"' in page and "<progress" in page

    again = client.post("/integrations", data=form, follow_redirects=True).text
    assert "Nothing was added" in again and "already connected" in again
    assert THIRD_KEY not in again


def test_test_connection_of_a_revoked_key_shows_the_error(home: Home, client: TestClient):
    integration_id = home.ids[1]
    home.emulator.revoke_key(OTHER_KEY)
    try:
        page = client.post(
            f"/integrations/{integration_id}/test",
            data={"csrf_token": csrf_of(client)},
            follow_redirects=True,
        ).text
        assert "Test Connection failed" in page
        card = page[page.index(f'id="card-{integration_id}"') :]
        card = card[: card.index("</article>")]
        assert 'badge-error" data-role="badge">error<' in card and "Error:</strong>" in card
    finally:
        home.emulator._revoked.discard(OTHER_KEY)
    ok = client.post(f"/integrations/{integration_id}/test", data={"csrf_token": csrf_of(client)},
                     follow_redirects=True).text  # fmt: skip
    assert "can read costs" in ok


def test_change_plan_and_remove_with_confirmation(home: Home, client: TestClient):
    registry = Registry.from_settings(home.settings)
    target = registry.add("Short Lived", "free", "sk-admin-short-lived-0123456789abcdefghij").id
    csrf = csrf_of(client)
    client.post(f"/integrations/{target}/plan", data={"csrf_token": csrf, "plan": "pro"})
    assert registry.get(target).plan == "pro"
    unconfirmed = client.post(
        f"/integrations/{target}/remove", data={"csrf_token": csrf, "confirm": "nope"}
    ).text
    assert "type " + target in unconfirmed and registry.get(target)
    done = client.post(
        f"/integrations/{target}/remove",
        data={"csrf_token": csrf, "confirm": target, "purge": "yes"},
    ).text
    assert f"Removed {target}" in done and "deleted" in done
    assert target not in {i.id for i in registry.list()}


def test_force_sync_runs_the_cli_code_path_in_a_worker(home: Home, client: TestClient):
    """A real worker process: operations.sync_range in-process, then a fresh snapshot."""
    runner = JobRunner()
    try:
        with TestClient(create_app(home.settings, jobs=runner)) as real:
            before = real.get("/api/summary").json()["published_at"]
            answer = real.post(
                f"/api/integrations/{home.ids[0]}/sync",
                headers={"X-CSRF-Token": csrf_of(real)},
            )
            assert answer.status_code == 202
            job_id = answer.json()["job"]["id"]
            deadline = time.monotonic() + 120
            while (job := real.get(f"/api/jobs/{job_id}").json())["state"] in ("queued", "running"):
                assert time.monotonic() < deadline, job
                time.sleep(0.5)
            assert job["state"] == "succeeded", job
            assert job["run_id"] and "synced" in job["message"]
            # the new snapshot is built in the background; the old one answers meanwhile
            deadline = time.monotonic() + 30
            while real.get("/api/summary").json()["published_at"] == before:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            card = real.get("/integrations").text
            assert "Sync succeeded" in card
    finally:
        runner.stop()
