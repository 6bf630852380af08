"""Schedule, onboarding sensor, plan changes and Force Sync, with fixed tick times."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb
import pytest

from grafient_pipeline.definitions import build_definitions
from grafient_pipeline.defs.resources import RegistryResource
from grafient_pipeline.partitions import batch_tags, range_tags, run_slices
from grafient_pipeline.plans import DateRange
from grafient_pipeline.sync import utc_today
from tests.conftest import ADMIN_KEY, ORG_ID, run_range

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def _range(request: dg.RunRequest) -> tuple[str, date, date]:
    start_day, integration = request.tags[RANGE_START].split("|")
    end_day, end_integration = request.tags[RANGE_END].split("|")
    assert integration == end_integration
    return integration, date.fromisoformat(start_day), date.fromisoformat(end_day)


@pytest.fixture
def defs(settings) -> dg.Definitions:
    return build_definitions(settings)


def _resources(settings) -> dict[str, object]:
    return {"registry": RegistryResource(home=str(settings.home))}


def _covered(request: dg.RunRequest, instance) -> list[tuple[str, date, date]]:
    return [
        (piece.integration_id, piece.dates.start, piece.dates.end)
        for piece in run_slices(dict(request.tags), instance)
    ]


def test_daily_tick_batches_the_trailing_three_days_of_every_integration(
    settings, registry, instance, monkeypatch
):
    monkeypatch.setenv("GRAFIENT_SYNC_BATCH", "2")
    first, second = registry.add("A", "free", ADMIN_KEY), registry.add("B", "pro", ADMIN_KEY)
    gone = registry.add("Gone", "free", ADMIN_KEY)
    third, fourth = registry.add("C", "free", ADMIN_KEY), registry.add("D", "free", ADMIN_KEY)
    broken, fifth = registry.add("E", "free", ADMIN_KEY), registry.add("F", "free", ADMIN_KEY)
    ids = [first.id, second.id, gone.id, third.id, fourth.id, broken.id, fifth.id]
    instance.add_dynamic_partitions("integrations", ids)
    registry.remove(gone.id)
    registry.set_status(broken.id, "error", "the key was revoked")
    schedule = build_definitions(settings).resolve_schedule_def("daily_openai_sync")
    tick = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)

    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick, resources=_resources(settings)
    ) as context:
        requests = schedule.evaluate_tick(context).run_requests

    window = (date(2026, 3, 7), date(2026, 3, 9))
    runs = sorted(sorted(i for i, *_ in _covered(r, instance)) for r in requests)
    assert runs == sorted(
        [sorted([first.id, second.id]), sorted([third.id, fourth.id]), [fifth.id], [broken.id]]
    )
    assert all(tuple(dates) == window for r in requests for _, *dates in _covered(r, instance))
    assert len({r.run_key for r in requests}) == len(requests)
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def _run_batch(
    defs: dg.Definitions, instance, ids: list[str], dates: DateRange, reason: str
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("openai_costs_job").execute_in_process(
        instance=instance,
        tags={**batch_tags(ids, dates), "grafient/reason": reason},
        raise_on_error=False,
    )


def _split(defs: dg.Definitions, instance, run_id: str) -> list[dg.RunRequest] | dg.SkipReason:
    """What failed_batch_fallback says about a failed run."""
    (failure,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="failed_batch_fallback",
        dagster_event=failure.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
    ).for_run_failure()
    return defs.resolve_sensor_def("failed_batch_fallback")(context)


def test_a_failed_batch_is_split_into_one_run_per_integration(
    settings, registry, instance, defs, emulator
):
    good = registry.add("Good", "pro", ADMIN_KEY, organization_id=ORG_ID)
    bad = registry.add("Bad", "pro", "sk-admin-" + "x" * 40)
    instance.add_dynamic_partitions("integrations", [bad.id, good.id])
    dates = DateRange(utc_today() - timedelta(days=3), utc_today() - timedelta(days=1))
    job = defs.resolve_job_def("openai_costs_job")

    batch = _run_batch(defs, instance, [bad.id, good.id], dates, "daily")

    assert not batch.success
    requests = _split(defs, instance, batch.run_id)
    assert sorted(_range(r) for r in requests) == sorted(
        [(bad.id, dates.start, dates.end), (good.id, dates.start, dates.end)]
    )
    outcomes = {
        _range(r)[0]: job.execute_in_process(
            instance=instance, tags=r.tags, raise_on_error=False
        ).success
        for r in requests
    }
    assert outcomes == {bad.id: False, good.id: True}
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        (total,) = conn.execute(
            "SELECT sum(amount_usd) FROM rollup_model_daily WHERE integration_id = ?", [good.id]
        ).fetchone()
    assert total == emulator.expected_total(ORG_ID, dates.start, dates.end)


@pytest.mark.parametrize("reason", ["daily", "onboarding"])
def test_only_a_failed_daily_batch_is_split(settings, registry, instance, defs, reason):
    """A single-integration run is not split, nor a run over several that the schedule did not
    launch (a backfill someone started from the UI stays theirs to re-execute)."""
    bad = registry.add("Bad", "pro", "sk-admin-" + "x" * 40)
    other = registry.add("Other", "pro", ADMIN_KEY)
    instance.add_dynamic_partitions("integrations", [bad.id, other.id])
    dates = DateRange(utc_today() - timedelta(days=2), utc_today() - timedelta(days=1))
    ids = [bad.id] if reason == "daily" else [bad.id, other.id]
    result = _run_batch(defs, instance, ids, dates, reason)
    assert not result.success
    assert isinstance(_split(defs, instance, result.run_id), dg.SkipReason)


def test_schedule_honours_resync_days(settings, registry, instance, monkeypatch):
    monkeypatch.setenv("GRAFIENT_RESYNC_DAYS", "5")
    integration = registry.add("Org", "free", ADMIN_KEY)
    instance.add_dynamic_partitions("integrations", [integration.id])
    schedule = build_definitions(settings).resolve_schedule_def("daily_openai_sync")
    tick = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick, resources=_resources(settings)
    ) as context:
        (request,) = schedule.evaluate_tick(context).run_requests
    assert _range(request) == (integration.id, date(2026, 3, 5), date(2026, 3, 9))


def _sensor_tick(defs, settings, instance) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def("integrations_sensor")
    context = dg.build_sensor_context(instance=instance, resources=_resources(settings))
    return sensor.evaluate_tick(context)


def _apply_partition_requests(instance, result) -> None:
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def test_sensor_backfills_each_new_integration_once_within_its_plan(
    settings, registry, instance, defs
):
    free = registry.add("Free Org", "free", ADMIN_KEY)
    pro = registry.add("Pro Org", "pro", ADMIN_KEY)
    today = utc_today()

    first = _sensor_tick(defs, settings, instance)
    _apply_partition_requests(instance, first)

    spans = {i: (e - s).days + 1 for i, s, e in map(_range, first.run_requests)}
    assert spans == {free.id: 30, pro.id: 180}
    assert {_range(r)[2] for r in first.run_requests} == {today}
    assert set(instance.get_dynamic_partitions("integrations")) == {free.id, pro.id}
    second = _sensor_tick(defs, settings, instance)
    assert second.run_requests == []


def test_sensor_removes_the_partition_of_a_removed_integration(settings, registry, instance, defs):
    keep = registry.add("Keep", "free", ADMIN_KEY)
    drop = registry.add("Drop", "free", ADMIN_KEY)
    _apply_partition_requests(instance, _sensor_tick(defs, settings, instance))
    registry.remove(drop.id)

    _apply_partition_requests(instance, _sensor_tick(defs, settings, instance))

    assert instance.get_dynamic_partitions("integrations") == [keep.id]


def test_upgrade_asks_only_for_the_newly_allowed_days(settings, registry, instance, defs):
    integration = registry.add("Org", "free", ADMIN_KEY)
    _apply_partition_requests(instance, _sensor_tick(defs, settings, instance))
    registry.set_plan(integration.id, "pro")
    today = utc_today()

    (request,) = _sensor_tick(defs, settings, instance).run_requests

    assert _range(request) == (
        integration.id,
        today - timedelta(days=179),
        today - timedelta(days=30),
    )
    assert request.tags["grafient/reason"] == "plan upgrade"
    assert _sensor_tick(defs, settings, instance).run_requests == []


def test_downgrade_requests_nothing_and_refuses_older_days(settings, registry, instance, defs):
    integration = registry.add("Org", "pro", ADMIN_KEY)
    _apply_partition_requests(instance, _sensor_tick(defs, settings, instance))
    registry.set_plan(integration.id, "free")
    assert _sensor_tick(defs, settings, instance).run_requests == []

    old = DateRange(utc_today() - timedelta(days=40), utc_today() - timedelta(days=38))
    job = defs.resolve_job_def("openai_costs_job")
    result = job.execute_in_process(
        instance=instance, tags=range_tags(integration.id, old), raise_on_error=False
    )
    assert not result.success
    assert "free plan" in str(result.all_events)


def test_force_sync_materializes_the_same_assets_for_yesterday_and_today(
    settings, registry, instance, defs, emulator
):
    integration = registry.add("Org", "pro", ADMIN_KEY, organization_id=ORG_ID)
    instance.add_dynamic_partitions("integrations", [integration.id])
    today = utc_today()

    result = defs.resolve_job_def("force_sync").execute_in_process(
        instance=instance,
        tags=range_tags(integration.id, DateRange(today - timedelta(days=1), today)),
    )

    assert result.success
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        rows = conn.execute(
            "SELECT cost_date, sum(amount_usd), bool_and(is_final) FROM fct_costs "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
    expected = emulator.expected_totals(ORG_ID, today - timedelta(days=1), today)
    assert {d: t for d, t, _ in rows} == {d: t for d, t in expected.items() if t}
    assert [final for d, _, final in rows if d == today] in ([False], [])
    materialized = instance.get_materialized_partitions(dg.AssetKey("rollup_model_daily"))
    assert {k.split("|")[0] for k in materialized} == {
        (today - timedelta(days=1)).isoformat(),
        today.isoformat(),
    }


def test_freshness_check_flags_an_active_integration_without_yesterday(
    settings, registry, instance, defs
):
    synced = registry.add("Synced", "pro", ADMIN_KEY, organization_id=ORG_ID)
    late = registry.add("Late", "pro", ADMIN_KEY)
    yesterday = utc_today() - timedelta(days=1)
    run_range(settings, instance, synced.id, DateRange(yesterday, yesterday))
    registry.mark_synced(late.id, datetime.now(UTC))  # active, but yesterday never landed

    result = defs.resolve_job_def("freshness_check_job").execute_in_process(instance=instance)

    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["missing"].value == [late.id]


def test_a_daily_batch_run_lands_every_integration_exactly(
    settings, registry, instance, defs, emulator
):
    ids = [registry.add(f"Org {n}", "pro", ADMIN_KEY).id for n in range(3)]
    instance.add_dynamic_partitions("integrations", ids)
    dates = DateRange(utc_today() - timedelta(days=3), utc_today() - timedelta(days=1))

    result = _run_batch(defs, instance, ids, dates, "daily")

    assert result.success
    expected = emulator.expected_total(ORG_ID, dates.start, dates.end)
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        totals = dict(
            conn.execute(
                "SELECT integration_id, sum(amount_usd) FROM rollup_token_type_daily GROUP BY 1"
            ).fetchall()
        )
    assert totals == dict.fromkeys(ids, expected)
    materialized = instance.get_materialized_partitions(dg.AssetKey("rollup_model_daily"))
    assert len(materialized) == 3 * 3
