"""Issue 13: exact under every answer and every clock. Each test is one numbered case; the
hostile answers come from a canned Costs API over real HTTP (tests/canned_api.py)."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import dagster as dg
import pytest

from grafient_pipeline import operations, slice_sync
from grafient_pipeline.definitions import build_definitions
from grafient_pipeline.defs.automation.schedules import daily_groups, resync_window
from grafient_pipeline.partitions import request_tags
from grafient_pipeline.plans import DateRange, earliest_allowed_date
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings
from grafient_pipeline.sync import utc_today
from tests.canned_api import KEY, CannedApi, bucket, result, serving
from tests.conftest import run_range
from tests.test_idempotency import COST_TABLES, failure_message, snapshot, warehouse

YESTERDAY = utc_today() - timedelta(days=1)
DAY_BEFORE = YESTERDAY - timedelta(days=1)
DATES = DateRange(DAY_BEFORE, YESTERDAY)


def good_pages() -> list[list[dict]]:
    return [[bucket(DAY_BEFORE, [result("1.5")]), bucket(YESTERDAY, [result("2.25", "USD")])]]


@pytest.fixture
def api(settings: Settings) -> CannedApi:
    with serving(CannedApi(good_pages())) as running:
        yield running


@pytest.fixture
def integration_id(registry: Registry, api: CannedApi) -> str:
    return registry.add("Canned", "pro", KEY, base_url=api.base_url).id


def synced_ok(settings, instance, integration_id) -> dict:
    result_ = run_range(settings, instance, integration_id, DATES)
    assert result_.success, failure_message(result_)
    return snapshot(settings)


def assert_refused(settings, instance, registry, integration_id, before, *phrases) -> str:
    outcome = run_range(settings, instance, integration_id, DATES)
    assert not outcome.success
    message = failure_message(outcome)
    stored = registry.get(integration_id)
    assert stored.status == "error"
    for phrase in phrases:
        assert phrase in message, (phrase, message)
        assert phrase in (stored.last_error or ""), (phrase, stored.last_error)
    assert snapshot(settings) == before  # all four tables exactly as before: they agree
    return message


# 1 + 2 ------------------------------------------------------------------ currencies


@pytest.mark.parametrize(
    "currencies",
    [("usd", "eur"), ("eur", "eur"), ("usd", "USD ")],
    ids=["mixed", "all-eur", "padded-code"],
)
def test_a_slice_with_any_non_usd_amount_is_refused_before_it_is_written(
    settings, instance, registry, api, integration_id, currencies
):
    before = synced_ok(settings, instance, integration_id)
    api.pages = [[bucket(YESTERDAY, [result("1", c) for c in currencies])]]

    message = assert_refused(
        settings,
        instance,
        registry,
        integration_id,
        before,
        "single_currency",
        YESTERDAY.isoformat(),
    )
    assert integration_id in message


def test_currency_codes_compare_case_insensitively(settings, instance, integration_id):
    after = synced_ok(settings, instance, integration_id)  # "usd" and "USD" in one slice
    with warehouse(settings) as conn:
        (total,) = conn.execute("SELECT sum(amount_usd) FROM v_daily_costs").fetchone()
    assert total == Decimal("3.75") and len(after["fct_costs"]) == 2


def test_force_sync_runs_the_same_assets_and_checks(
    settings, instance, registry, api, integration_id
):
    before = synced_ok(settings, instance, integration_id)
    api.pages = [[bucket(YESTERDAY, [result("1", "usd"), result("100", "eur")])]]
    instance.add_dynamic_partitions("integrations", [integration_id])
    job = build_definitions(settings).resolve_job_def("force_sync")
    tags = request_tags([integration_id], DATES, "force sync", utc_today())

    outcome = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)

    assert not outcome.success and "single_currency" in failure_message(outcome)
    assert snapshot(settings) == before


# 3 ------------------------------------------------------------------ duplicate buckets


@pytest.mark.parametrize("where", ["same page", "two pages"])
def test_a_bucket_seen_twice_in_one_answer_is_refused(
    settings, instance, registry, api, integration_id, where
):
    before = synced_ok(settings, instance, integration_id)
    day = bucket(YESTERDAY, [result("10")])
    api.pages = [[day, day]] if where == "same page" else [[day], [day]]

    assert_refused(settings, instance, registry, integration_id, before, "twice")


# 5 ------------------------------------------------------------------ midnight


def test_a_run_is_judged_by_the_plan_window_it_was_requested_in(
    settings, instance, registry, api, integration_id
):
    registry.set_plan(integration_id, "free")
    today = utc_today()
    oldest_yesterday = earliest_allowed_date("free", today - timedelta(days=1))
    window = DateRange(oldest_yesterday, oldest_yesterday + timedelta(days=1))
    api.pages = [[bucket(d, [result("1")]) for d in window.dates()]]
    instance.add_dynamic_partitions("integrations", [integration_id])
    job = build_definitions(settings).resolve_job_def("openai_costs_job")

    # Requested at 23:59 yesterday (its plan date), started after midnight: still in its window.
    asked = request_tags([integration_id], window, "onboarding", today - timedelta(days=1))
    assert job.execute_in_process(instance=instance, tags=asked).success
    # The same range asked today, or a re-execution weeks later, is judged by today's window.
    stale = request_tags([integration_id], window, "onboarding", today - timedelta(days=30))
    refused = job.execute_in_process(instance=instance, tags=stale, raise_on_error=False)
    assert not refused.success and "free plan" in failure_message(refused)


# 6 ------------------------------------------------------------------ resync window vs plan


def test_the_daily_window_is_clipped_to_each_integrations_plan(registry):
    tick = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)
    free = registry.add("Free org", "free", KEY)
    pro = registry.add("Pro org", "pro", KEY.replace("canned", "cannedpro"))
    asked = resync_window(tick, 30)

    groups = daily_groups([free.id, pro.id], registry.list(), 20, asked, tick.date())

    by_id = {ids[0]: window for ids, window in groups}
    assert by_id[pro.id] == asked
    assert by_id[free.id] == DateRange(earliest_allowed_date("free", tick.date()), asked.end)
    assert by_id[free.id].days == 29


# 7 ------------------------------------------------------------------ errors keep their cause


def test_a_full_disk_sets_error_with_the_real_cause(
    settings, instance, registry, integration_id, monkeypatch
):
    before = synced_ok(settings, instance, integration_id)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(settings.staging_dir))

    monkeypatch.setattr(slice_sync, "stage_chunks", disk_full)
    assert_refused(settings, instance, registry, integration_id, before, "No space left on device")


def test_an_impossible_start_time_is_a_clear_error(
    settings, instance, registry, api, integration_id
):
    before = synced_ok(settings, instance, integration_id)
    api.pages = [[bucket(YESTERDAY, [result("1")], start=2**40)]]

    assert_refused(settings, instance, registry, integration_id, before, "no day")


# 8 ------------------------------------------------------------------ purge


def test_a_purge_during_a_sync_leaves_nothing_of_the_integration(
    settings, instance, registry, api, integration_id
):
    synced_ok(settings, instance, integration_id)
    other = registry.add(
        "Bystander", "pro", KEY.replace("canned", "bystand"), base_url=api.base_url
    )
    synced_ok(settings, instance, other.id)
    api.before_answer = lambda: operations.remove_integration(settings, integration_id, purge=True)

    outcome = run_range(settings, instance, integration_id, DATES)

    assert not outcome.success and "removed" in failure_message(outcome)
    with warehouse(settings) as conn:
        for table in (*COST_TABLES, "dim_integrations"):
            rows = conn.execute(
                f"SELECT count(*) FROM {table} WHERE integration_id = ?", [integration_id]
            ).fetchone()
            assert rows == (0,), table
        (kept,) = conn.execute(
            "SELECT count(*) FROM fct_costs WHERE integration_id = ?", [other.id]
        ).fetchone()
    assert kept == 2


# 9 ------------------------------------------------------------------ plan downgrade


def test_a_downgrade_keeps_the_rows_and_the_daily_sync_uses_the_new_window(
    settings, instance, registry, api, integration_id
):
    before = synced_ok(settings, instance, integration_id)
    registry.mark_backfill_requested(integration_id, 180)  # its onboarding backfill was asked
    integration, new_days = operations.set_plan(settings, integration_id, "free")
    assert integration.plan == "free" and new_days is None
    assert snapshot(settings) == before
    tick = datetime.now(UTC)
    asked = resync_window(tick, 60)
    ((_, window),) = daily_groups([integration_id], registry.list(), 20, asked, tick.date())
    assert window.start == earliest_allowed_date("free", tick.date())


def test_a_removed_integration_keeps_its_label_when_not_purged(
    settings, instance, registry, api, integration_id
):
    synced_ok(settings, instance, integration_id)
    other = registry.add("Later", "pro", KEY.replace("canned", "later00"), base_url=api.base_url)
    operations.remove_integration(settings, integration_id, purge=False)
    synced_ok(settings, instance, other.id)  # refreshes dim_integrations
    with warehouse(settings) as conn:
        row = conn.execute(
            "SELECT label, status FROM dim_integrations WHERE integration_id = ?",
            [integration_id],
        ).fetchone()
    assert row == ("Canned", "removed")


def test_the_lineage_stays_four_assets_named_after_their_tables(settings):
    keys = build_definitions(settings).resolve_asset_graph().get_all_asset_keys()
    names = {key.to_user_string() for key in keys}
    assert {"openai_cost_buckets", "fct_costs", "rollup_model_daily"} <= names
    assert dg.AssetKey("rollup_token_type_daily") in keys
