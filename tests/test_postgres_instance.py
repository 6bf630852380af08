"""Issue 19: Dagster's instance on a real PostgreSQL server (tests/postgres.py starts it).

With GRAFIENT_DAGSTER_POSTGRES_URL set, the generated dagster.yaml keeps runs, events and
schedules in PostgreSQL; the runs, the sensor, the schedule, Force Sync, the freshness check and
dead-run reaping behave as on SQLite. Each test has a database of its own.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from grafient_pipeline.definitions import build_definitions
from grafient_pipeline.instance import dagster_environment, get_instance, prepare_home
from grafient_pipeline.partitions import range_tags
from grafient_pipeline.plans import DateRange
from grafient_pipeline.run_workers import HOST_TAG, PID_TAG, reap_dead_runs, worker_tags
from grafient_pipeline.runs import _serves
from grafient_pipeline.settings import DAGSTER_POSTGRES_URL, Settings, SettingsError, load_settings
from grafient_pipeline.sync import utc_today
from tests.conftest import ADMIN_KEY, ORG_ID, OTHER_KEY, OTHER_ORG_ID, last_days, run_range
from tests.postgres import PASSWORD
from tests.test_automation import (
    _apply_partition_requests,
    _covered,
    _range,
    _resources,
    _run_batch,
    _sensor_tick,
    _split,
)
from tests.test_run_workers import _dead_pid, _started_run


@pytest.fixture
def pg_settings(settings: Settings, postgres_url: str, monkeypatch) -> Settings:
    """The test's home with Dagster on PostgreSQL, the URL given as people write it."""
    plain = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    monkeypatch.setenv(DAGSTER_POSTGRES_URL, plain)
    return load_settings()


@pytest.fixture
def pg_instance(pg_settings: Settings, monkeypatch) -> Iterator[dg.DagsterInstance]:
    """The home's persistent instance, as the CLI gets it (get_instance sets the environment)."""
    monkeypatch.setenv("DAGSTER_HOME", str(pg_settings.dagster_home))  # restored afterwards
    instance = get_instance(pg_settings)
    try:
        yield instance
    finally:
        instance.dispose()


@pytest.fixture
def defs(pg_settings: Settings) -> dg.Definitions:
    return build_definitions(pg_settings)


def _files_holding(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_the_instance_keeps_runs_events_and_schedules_in_postgres(pg_settings, pg_instance):
    assert isinstance(pg_instance.run_storage, PostgresRunStorage)
    assert isinstance(pg_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(pg_instance.schedule_storage, PostgresScheduleStorage)
    config = yaml.safe_load((pg_settings.dagster_home / "dagster.yaml").read_text())
    assert config["storage"] == {"postgres": {"postgres_url": {"env": DAGSTER_POSTGRES_URL}}}
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert pg_instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert not _files_holding(pg_settings.home, PASSWORD)


def test_the_webserver_page_shows_this_home_and_not_the_password(pg_settings, pg_instance):
    """The webserver's instance info (what runs.find_webserver compares) names this home's
    dagster_home, and never the password."""
    info = pg_instance.info_str()
    assert _serves(info, pg_settings.dagster_home)
    assert "PostgresRunStorage" in info and PASSWORD not in info


def test_dagster_processes_get_the_url_with_its_driver(pg_settings):
    env = dagster_environment(pg_settings)
    assert env[DAGSTER_POSTGRES_URL].startswith("postgresql+psycopg2://")
    assert env["DAGSTER_HOME"] == str(pg_settings.dagster_home)


def test_without_the_url_the_home_stays_on_sqlite(settings):
    prepare_home(settings)
    config = yaml.safe_load((settings.dagster_home / "dagster.yaml").read_text())
    assert config["storage"]["custom"]["class"] == "GrafientSqliteStorage"


def test_a_range_run_lands_exact_totals(pg_settings, registry, pg_instance, emulator):
    integration = registry.add("Org", "pro", ADMIN_KEY, organization_id=ORG_ID)
    dates = last_days(5)

    result = run_range(pg_settings, pg_instance, integration.id, dates)

    assert result.success
    with duckdb.connect(pg_settings.warehouse, read_only=True) as conn:
        (total,) = conn.execute("SELECT sum(amount_usd) FROM rollup_model_daily").fetchone()
    assert total == emulator.expected_total(ORG_ID, dates.start, dates.end)
    materialized = pg_instance.get_materialized_partitions(dg.AssetKey("fct_costs"))
    assert len(materialized) == 5
    assert pg_instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert not _files_holding(pg_settings.home, PASSWORD)  # logs and staging included


def test_the_onboarding_sensor_requests_each_backfill_once(
    pg_settings, registry, pg_instance, defs
):
    free = registry.add("Free Org", "free", ADMIN_KEY)
    pro = registry.add("Pro Org", "pro", ADMIN_KEY)

    first = _sensor_tick(defs, pg_settings, pg_instance)
    _apply_partition_requests(pg_instance, first)

    spans = {i: (e - s).days + 1 for i, s, e in map(_range, first.run_requests)}
    assert spans == {free.id: 30, pro.id: 180}
    assert set(pg_instance.get_dynamic_partitions("integrations")) == {free.id, pro.id}
    assert _sensor_tick(defs, pg_settings, pg_instance).run_requests == []


def test_the_daily_schedule_batches_and_a_failed_batch_is_split(
    pg_settings, registry, pg_instance, defs, emulator, monkeypatch
):
    monkeypatch.setenv("GRAFIENT_SYNC_BATCH", "2")
    good = registry.add("Good", "pro", ADMIN_KEY, organization_id=ORG_ID)
    other = registry.add("Other", "pro", OTHER_KEY, organization_id=OTHER_ORG_ID)
    bad = registry.add("Bad", "pro", "sk-admin-" + "x" * 40)
    ids = [good.id, other.id, bad.id]
    pg_instance.add_dynamic_partitions("integrations", ids)
    schedule = build_definitions(load_settings()).resolve_schedule_def("daily_openai_sync")
    tick = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)
    with dg.build_schedule_context(
        instance=pg_instance, scheduled_execution_time=tick, resources=_resources(pg_settings)
    ) as context:
        requests = schedule.evaluate_tick(context).run_requests
    batches = sorted(sorted(i for i, *_ in _covered(r, pg_instance)) for r in requests)
    assert sorted(map(len, batches)) == [1, 2]
    assert sorted(i for batch in batches for i in batch) == sorted(ids)
    assert {(s, e) for r in requests for _, s, e in _covered(r, pg_instance)} == {
        (date(2026, 3, 7), date(2026, 3, 9))
    }

    dates = DateRange(utc_today() - timedelta(days=2), utc_today() - timedelta(days=1))
    landed = _run_batch(defs, pg_instance, [good.id, other.id], dates, "daily")
    failed = _run_batch(defs, pg_instance, [other.id, bad.id], dates, "daily")  # contiguous

    assert landed.success and not failed.success
    split = _split(defs, pg_instance, failed.run_id)
    assert sorted(_range(r)[0] for r in split) == sorted([other.id, bad.id])
    expected = {
        good.id: emulator.expected_total(ORG_ID, dates.start, dates.end),
        other.id: emulator.expected_total(OTHER_ORG_ID, dates.start, dates.end),
    }
    with duckdb.connect(pg_settings.warehouse, read_only=True) as conn:
        totals = dict(
            conn.execute(
                "SELECT integration_id, sum(amount_usd) FROM rollup_token_type_daily GROUP BY 1"
            ).fetchall()
        )
    assert totals == expected


def test_force_sync_materializes_yesterday_and_today(
    pg_settings, registry, pg_instance, defs, emulator
):
    integration = registry.add("Org", "pro", ADMIN_KEY, organization_id=ORG_ID)
    pg_instance.add_dynamic_partitions("integrations", [integration.id])
    today = utc_today()

    result = defs.resolve_job_def("force_sync").execute_in_process(
        instance=pg_instance,
        tags=range_tags(integration.id, DateRange(today - timedelta(days=1), today)),
    )

    assert result.success
    materialized = pg_instance.get_materialized_partitions(dg.AssetKey("rollup_model_daily"))
    assert {k.split("|")[0] for k in materialized} == {
        (today - timedelta(days=1)).isoformat(),
        today.isoformat(),
    }


def test_the_freshness_check_flags_an_integration_without_yesterday(
    pg_settings, registry, pg_instance, defs
):
    synced = registry.add("Synced", "pro", ADMIN_KEY, organization_id=ORG_ID)
    late = registry.add("Late", "pro", ADMIN_KEY)
    yesterday = utc_today() - timedelta(days=1)
    assert run_range(pg_settings, pg_instance, synced.id, DateRange(yesterday, yesterday)).success
    registry.mark_synced(late.id, datetime.now(UTC))

    result = defs.resolve_job_def("freshness_check_job").execute_in_process(instance=pg_instance)

    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["missing"].value == [late.id]


def test_a_dead_run_is_failed_and_its_pool_slot_freed(pg_settings, pg_instance):
    here = socket.gethostname()
    dead = _started_run(pg_instance, {PID_TAG: str(_dead_pid()), HOST_TAG: here})
    alive = _started_run(pg_instance, worker_tags())
    pg_instance.event_log_storage.claim_concurrency_slot("duckdb", dead, "openai_cost_buckets")

    assert reap_dead_runs(pg_settings, pg_instance) == [dead]

    assert pg_instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert pg_instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
    assert pg_instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots == []


def test_two_homes_on_one_database_share_the_runs(pg_settings, pg_instance, tmp_path, monkeypatch):
    """Another machine (another home) with the same URL sees this home's runs."""
    run_id = _started_run(pg_instance, {"grafient/reason": "shared " + uuid.uuid4().hex})
    monkeypatch.setenv("GRAFIENT_HOME", str(tmp_path / "other-home"))
    other = load_settings()
    prepare_home(other)
    with dg.DagsterInstance.from_config(str(other.dagster_home)) as elsewhere:
        assert elsewhere.get_run_by_id(run_id) is not None


def test_a_wrong_password_is_one_line_without_the_password(settings, postgres_url, monkeypatch):
    wrong = postgres_url.replace(PASSWORD, "not-the-password")
    monkeypatch.setenv(DAGSTER_POSTGRES_URL, wrong)
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))
    with pytest.raises(SettingsError) as raised:
        get_instance(load_settings())
    message = str(raised.value)
    assert message.startswith("Dagster's PostgreSQL at postgresql+psycopg2://grafient:***@")
    assert "password authentication failed" in message
    assert "not-the-password" not in message and "\n" not in message
