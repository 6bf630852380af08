"""Issue 18's fleet target: a daily batch writes on one connection and publishes the dashboard's
snapshot once per daily sync, with every guarantee of a slice kept."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb
import pytest

from grafient_pipeline import slice_batch, sync
from grafient_pipeline.definitions import build_definitions
from grafient_pipeline.defs.costs import assets
from grafient_pipeline.defs.costs.publish import later_writer
from grafient_pipeline.partitions import PLAN_DATE_TAG, REASON_TAG, batch_tags
from grafient_pipeline.plans import DateRange
from grafient_pipeline.providers import PROVIDERS
from grafient_pipeline.providers.base import CostBucket
from grafient_pipeline.run_workers import PID_TAG
from grafient_pipeline.sync import Slice, utc_today
from tests.conftest import ADMIN_KEY, ORG_ID

JOB = "openai_costs_job"
TODAY = "2026-03-02"
BY_INTEGRATION = "SELECT integration_id, sum(amount_usd) FROM fct_costs GROUP BY 1"


def _dates(days: int = 3) -> DateRange:
    end = utc_today() - timedelta(days=1)
    return DateRange(end - timedelta(days=days - 1), end)


def _run(settings, instance, ids: list[str], dates: DateRange, reason: str = "daily", **tags):
    return (
        build_definitions(settings)
        .resolve_job_def(JOB)
        .execute_in_process(
            instance=instance,
            tags={
                **batch_tags(ids, dates),
                REASON_TAG: reason,
                PLAN_DATE_TAG: utc_today().isoformat(),
                **tags,
            },
            raise_on_error=False,
        )
    )


def _rows(settings, sql: str) -> list[tuple]:
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        return conn.execute(sql).fetchall()


def _published_at(settings):
    with duckdb.connect(str(settings.snapshot_path), read_only=True) as conn:
        return conn.execute("SELECT published_at FROM snapshot_info").fetchone()[0]


def _add_run(instance, status: dg.DagsterRunStatus, **tags: str) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name=JOB, run_id=run_id, status=status, tags=tags))
    return run_id


def test_a_daily_batch_opens_the_warehouse_a_fixed_number_of_times(
    settings, registry, instance, emulator, monkeypatch
):
    """Slices and names of every integration share one connection: opening the file (tens of
    ms, and a checkpoint at close) does not grow with the batch."""
    ids = [registry.add(f"Org {n}", "pro", ADMIN_KEY).id for n in range(4)]
    instance.add_dynamic_partitions("integrations", ids)
    opened: list[str] = []
    real_connect = assets.connect

    def counting(database, **kwargs):
        opened.append(database)
        return real_connect(database, **kwargs)

    monkeypatch.setattr(assets, "connect", counting)
    schema_checks: list[object] = []
    monkeypatch.setattr(sync, "ensure_schema", schema_checks.append)
    dates = _dates()

    assert _run(settings, instance, ids, dates).success

    assert len(opened) == 3  # schema and dims; the slices and names; what the run reports
    assert schema_checks == []  # the step checked the schema once; its slices do not again
    expected = emulator.expected_total(ORG_ID, dates.start, dates.end)
    totals = dict(
        _rows(settings, "SELECT integration_id, sum(amount_usd) FROM fct_costs GROUP BY 1")
    )
    assert totals == dict.fromkeys(ids, expected)
    for table in ("rollup_model_daily", "rollup_token_type_daily"):
        assert dict(
            _rows(settings, f"SELECT integration_id, sum(amount_usd) FROM {table} GROUP BY 1")
        ) == dict.fromkeys(ids, expected)
    named = dict(_rows(settings, "SELECT integration_id, count(name) FROM dim_projects GROUP BY 1"))
    assert set(named) == set(ids) and all(count > 0 for count in named.values())
    assert dict(
        _rows(settings, "SELECT integration_id, count(*) > 0 FROM dim_api_keys GROUP BY 1")
    ) == dict.fromkeys(ids, True)


def test_a_batch_run_twice_gives_identical_tables(settings, registry, instance, emulator):
    ids = [registry.add(f"Org {n}", "pro", ADMIN_KEY).id for n in range(2)]
    instance.add_dynamic_partitions("integrations", ids)
    tables = ("raw_openai_costs", "fct_costs", "rollup_model_daily", "rollup_token_type_daily")
    dumps = []
    for _ in range(2):
        assert _run(settings, instance, ids, _dates()).success
        dumps.append(
            {
                t: sorted(
                    _rows(settings, f"SELECT * EXCLUDE (fetched_at, run_id) FROM {t}")
                    if t.startswith("raw")
                    else _rows(settings, f"SELECT * FROM {t}"),
                    key=repr,
                )
                for t in tables
            }
        )
    assert dumps[0] == dumps[1]


def test_a_failed_fetch_still_writes_the_slices_fetched_before_it(
    settings, registry, instance, emulator
):
    good = registry.add("A good", "pro", ADMIN_KEY)  # slices go in id order
    bad = registry.add("B bad", "pro", "sk-admin-" + "x" * 40)
    later = registry.add("C later", "pro", ADMIN_KEY)
    ids = [good.id, bad.id, later.id]
    instance.add_dynamic_partitions("integrations", ids)
    dates = _dates()

    assert not _run(settings, instance, ids, dates).success

    landed = dict(
        _rows(settings, "SELECT integration_id, sum(amount_usd) FROM fct_costs GROUP BY 1")
    )
    assert landed == {good.id: emulator.expected_total(ORG_ID, dates.start, dates.end)}
    assert registry.get(bad.id).status == "error"
    assert registry.get(later.id).last_synced_at is None
    # the last run of its sync, failed or not, publishes what did land
    with duckdb.connect(str(settings.snapshot_path), read_only=True) as conn:
        assert conn.execute("SELECT DISTINCT integration_id FROM daily_costs").fetchall() == [
            (good.id,)
        ]


def test_a_daily_run_leaves_the_snapshot_to_a_later_run_of_its_sync(
    settings, registry, instance, emulator
):
    ids = [registry.add(f"Org {n}", "pro", ADMIN_KEY).id for n in range(2)]
    instance.add_dynamic_partitions("integrations", ids)
    today = utc_today().isoformat()
    assert _run(settings, instance, ids[:1], _dates()).success
    first = _published_at(settings)
    queued = _add_run(
        instance, dg.DagsterRunStatus.NOT_STARTED, **{REASON_TAG: "daily", PLAN_DATE_TAG: today}
    )

    assert _run(settings, instance, ids[1:], _dates()).success
    assert _published_at(settings) == first  # the queued run will publish

    instance.report_run_canceled(instance.get_run_by_id(queued))
    assert _run(settings, instance, ids[1:], _dates()).success
    assert _published_at(settings) > first  # the last one of its sync publishes
    published = _rows(settings, "SELECT count(*) FROM fct_costs")
    with duckdb.connect(str(settings.snapshot_path), read_only=True) as conn:
        assert conn.execute("SELECT fct_rows FROM snapshot_info").fetchall() == published


@pytest.mark.parametrize("reason", ["onboarding", "manual sync"])
def test_other_runs_always_publish(settings, registry, instance, emulator, reason):
    integration = registry.add("Org", "pro", ADMIN_KEY)
    instance.add_dynamic_partitions("integrations", [integration.id])
    _add_run(
        instance,
        dg.DagsterRunStatus.NOT_STARTED,
        **{REASON_TAG: "daily", PLAN_DATE_TAG: utc_today().isoformat()},
    )

    assert _run(settings, instance, [integration.id], _dates(), reason).success

    assert settings.snapshot_path.is_file()


def test_later_writer_is_a_run_of_the_same_sync_with_its_step_ahead(instance):
    run = instance.add_run(
        dg.DagsterRun(
            job_name=JOB,
            run_id=str(uuid.uuid4()),
            status=dg.DagsterRunStatus.STARTED,
            tags={REASON_TAG: "daily", PLAN_DATE_TAG: TODAY, PID_TAG: "1"},
        )
    )
    same = {REASON_TAG: "daily", PLAN_DATE_TAG: TODAY}
    assert later_writer(instance, run) is None
    _add_run(instance, dg.DagsterRunStatus.SUCCESS, **same)  # done
    _add_run(instance, dg.DagsterRunStatus.STARTED, **same, **{PID_TAG: "2"})  # wrote already
    _add_run(instance, dg.DagsterRunStatus.NOT_STARTED, **{**same, PLAN_DATE_TAG: "2026-03-01"})
    _add_run(instance, dg.DagsterRunStatus.NOT_STARTED, **{**same, REASON_TAG: "onboarding"})
    assert later_writer(instance, run) is None
    waiting = _add_run(instance, dg.DagsterRunStatus.STARTED, **same)  # waits for the pool
    assert later_writer(instance, run) == waiting
    split = {REASON_TAG: "split of a failed batch", PLAN_DATE_TAG: TODAY}
    manual = run.with_tags({REASON_TAG: "manual sync"})
    assert later_writer(instance, manual) is None
    instance.report_run_canceled(instance.get_run_by_id(waiting))
    pending_split = _add_run(instance, dg.DagsterRunStatus.NOT_STARTED, **split)
    assert later_writer(instance, run) == pending_split


def _bucket(day: int) -> CostBucket:
    return CostBucket(start_time=day * 86_400, end_time=(day + 1) * 86_400, results=[])


def test_groups_keep_order_and_stream_long_slices_alone():
    def piece(name: str, days: int) -> Slice:
        start = date(2026, 1, 1)
        return Slice(name, DateRange(start, start + timedelta(days=days - 1)))

    a, b, long, c = piece("a", 3), piece("b", 7), piece("long", 8), piece("c", 1)
    assert list(slice_batch.groups([a, b, long, c])) == [
        (True, [a, b]),
        (False, [long]),
        (True, [c]),
    ]


def test_a_replay_hands_back_only_its_own_slice():
    piece = Slice("a", DateRange(date(1970, 1, 2), date(1970, 1, 3)))
    fetched = slice_batch.Prefetched(piece, PROVIDERS["openai"], [_bucket(1), _bucket(2)], 1)
    replay = slice_batch.Replayed(fetched)
    assert list(replay.iter_buckets(piece.dates.start, piece.dates.end)) == fetched.buckets
    assert replay.request_count == 1
    with pytest.raises(ValueError):
        replay.iter_buckets(piece.dates.start, piece.dates.start)


def test_mark_synced_many_marks_each_and_skips_removed_ones(registry):
    one, two = (registry.add(f"Org {n}", "pro", ADMIN_KEY).id for n in range(2))
    registry.set_status(one, "error", "was failing")
    registry.remove(two)

    registry.mark_synced_many([one, two], datetime(2026, 3, 1, 6, tzinfo=UTC))

    marked = registry.get(one)
    assert (marked.status, marked.last_error) == ("active", None)
    assert marked.last_synced_at == datetime(2026, 3, 1, 6, tzinfo=UTC)
