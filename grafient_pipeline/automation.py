"""What makes the pipeline run itself: jobs, the 06:00 UTC schedule, the onboarding sensor,
Force Sync and the 09:00 UTC freshness expectation."""

from datetime import date, datetime, timedelta

import dagster as dg
from dagster_duckdb import DuckDBResource

from grafient_pipeline.assets import (
    _fetch_and_load,
    _integration_rows,
    _validate,
    claim_run_worker,
    cost_assets,
    fct_costs,
)
from grafient_pipeline.checks import reconcile
from grafient_pipeline.partitions import (
    batch_tags,
    contiguous_batches,
    integrations_partitions,
    partition_key,
    range_tags,
    run_slices,
)
from grafient_pipeline.plans import DateRange, upgrade_window, window_days
from grafient_pipeline.registry import Integration
from grafient_pipeline.resources import OpenAICostsResource, RegistryResource
from grafient_pipeline.run_workers import reap_dead_runs
from grafient_pipeline.sync import (
    Slice,
    build_fct_costs,
    build_rollup,
    refresh_dim_integrations,
    slice_totals,
    utc_today,
)
from grafient_pipeline.warehouse import ensure_schema

ROLLUPS = ("rollup_model_daily", "rollup_token_type_daily")
FRESHNESS_CHECK = dg.AssetCheckKey(fct_costs.key, "yesterday_synced_by_0900_utc")

openai_costs_job = dg.define_asset_job(
    "openai_costs_job",
    # The freshness check has its own 09:00 job: a sync run only runs the checks of its slices.
    selection=dg.AssetSelection.assets(*cost_assets) - dg.AssetSelection.checks(FRESHNESS_CHECK),
    description="Fetch, normalize and roll up OpenAI costs for a date range of one or more "
    "integrations.",
)


def resync_window(tick: datetime, days: int) -> DateRange:
    """The trailing complete days a tick re-pulls: `days` days ending yesterday (UTC)."""
    yesterday = tick.date() - timedelta(days=1)
    return DateRange(yesterday - timedelta(days=days - 1), yesterday)


@dg.schedule(
    name="daily_openai_sync",
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    job=openai_costs_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="06:00 UTC: re-pull the trailing GRAFIENT_RESYNC_DAYS complete days of every "
    "integration to pick up late and restated costs: one run per GRAFIENT_SYNC_BATCH "
    "integrations, one run each for integrations in error.",
)
def daily_openai_sync(
    context: dg.ScheduleEvaluationContext, registry: RegistryResource
) -> list[dg.RunRequest] | dg.SkipReason:
    dates = resync_window(context.scheduled_execution_time, registry.settings.resync_days)
    groups = daily_groups(
        list(context.instance.get_dynamic_partitions("integrations")),
        registry.open().list(),
        registry.settings.sync_batch,
    )
    requests = [
        dg.RunRequest(
            run_key=f"daily:{'..'.join(dict.fromkeys([group[0], group[-1]]))}:{dates}",
            tags={**batch_tags(group, dates), "grafient/reason": "daily"},
        )
        for group in groups
    ]
    return requests or dg.SkipReason("no integrations to sync")


def daily_groups(order: list[str], integrations: list[Integration], size: int) -> list[list[str]]:
    """The daily runs' integrations: healthy ones batched, each one in error on its own.

    A run per integration costs a process start and Dagster's bookkeeping (seconds); a batch
    shares them. An integration in error (revoked key) would fail every batch it is in, so it
    gets its own run, where its error is plainly its own.
    """
    known = set(order)
    failing = [i.id for i in integrations if i.status == "error" and i.id in known]
    healthy = {i.id for i in integrations if i.status != "error"}
    return contiguous_batches(order, healthy, size) + [[integration] for integration in failing]


@dg.run_failure_sensor(
    name="failed_batch_fallback",
    monitored_jobs=[openai_costs_job],
    request_job=openai_costs_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a daily sync run over several integrations fails (one bad key fails its "
    "batch), re-run each of its integrations on its own: the others land, the failure stays "
    "its own. Runs you launch yourself (backfills) are left to you.",
)
def failed_batch_fallback(
    context: dg.RunFailureSensorContext,
) -> list[dg.RunRequest] | dg.SkipReason:
    run = context.dagster_run
    if run.tags.get("grafient/reason") != "daily":
        return dg.SkipReason(f"run {run.run_id} is not a daily sync batch: left as it is")
    try:
        slices = run_slices(dict(run.tags), context.instance)
    except dg.DagsterError as error:  # an integration at an end of the range was removed since
        return dg.SkipReason(f"run {run.run_id}: cannot resolve its partitions: {error}")
    if len({piece.integration_id for piece in slices}) < 2:
        return dg.SkipReason(f"run {run.run_id} covers one integration: nothing to split")
    return [
        dg.RunRequest(
            run_key=f"split:{run.run_id}:{piece.integration_id}",
            tags={
                **range_tags(piece.integration_id, piece.dates),
                "grafient/reason": "split of a failed batch",
                "grafient/batch_run": run.run_id,
            },
        )
        for piece in slices
    ]


@dg.sensor(
    name="integrations_sensor",
    job=openai_costs_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the integrations partitions in step with the registry and launches one "
    "backfill per new integration (plan window) or plan upgrade (the newly allowed days).",
)
def integrations_sensor(
    context: dg.SensorEvaluationContext, registry: RegistryResource
) -> dg.SensorResult:
    for run_id in reap_dead_runs(registry.settings, context.instance):
        context.log.warning(f"marked run {run_id} failed: its process had died")
    store = registry.open()
    integrations = store.list()
    known = set(context.instance.get_dynamic_partitions("integrations"))
    current = {i.id for i in integrations}
    today = utc_today()
    run_requests = []
    for integration in integrations:
        window = upgrade_window(integration.backfilled_days, integration.plan, today)
        if window is None:
            continue
        reason = "onboarding" if integration.backfilled_days == 0 else "plan upgrade"
        run_requests.append(
            dg.RunRequest(
                run_key=f"backfill:{integration.id}:{window}",
                tags={**range_tags(integration.id, window), "grafient/reason": reason},
            )
        )
        store.mark_backfill_requested(integration.id, window_days(integration.plan))
    partition_requests = []
    if current - known:
        partition_requests.append(
            integrations_partitions.build_add_request(sorted(current - known))
        )
    if known - current:
        partition_requests.append(
            integrations_partitions.build_delete_request(sorted(known - current))
        )
    return dg.SensorResult(
        run_requests=run_requests, dynamic_partitions_requests=partition_requests
    )


class ForceSyncConfig(dg.Config):
    integration_id: str
    start_date: str | None = None  # default: yesterday (UTC)
    end_date: str | None = None  # default: today (UTC), partial data


def force_sync_range(start: str | None, end: str | None, today: date) -> DateRange:
    return DateRange(
        date.fromisoformat(start) if start else today - timedelta(days=1),
        date.fromisoformat(end) if end else today,
    )


@dg.op(pool="duckdb", description="Fetch and rebuild one integration's range now.")
def force_sync_op(
    context: dg.OpExecutionContext,
    config: ForceSyncConfig,
    duckdb: DuckDBResource,
    openai_api: OpenAICostsResource,
    registry: RegistryResource,
):
    claim_run_worker(context)
    try:
        dates = force_sync_range(config.start_date, config.end_date, utc_today())
    except ValueError as error:
        raise dg.Failure(f"bad date in force_sync config: {error} (use YYYY-MM-DD)") from None
    piece = Slice(config.integration_id, dates)
    store = registry.open()
    _validate(store, [piece])
    _fetch_and_load(context, piece, store, openai_api, duckdb, registry.settings.staging_dir)
    with duckdb.get_connection() as conn:
        ensure_schema(conn)
        refresh_dim_integrations(conn, _integration_rows(store))
        build_fct_costs(conn, piece, utc_today())
        for rollup in ROLLUPS:
            build_rollup(conn, rollup, piece)
        pairs = [("raw_openai_costs", "fct_costs")] + [("fct_costs", r) for r in ROLLUPS]
        mismatches = [m for up, down in pairs for m in reconcile(conn, up, down, piece)]
        rows, total = slice_totals(conn, "fct_costs", piece)
    if mismatches:
        raise dg.Failure(f"{piece}: totals do not reconcile on {len(mismatches)} day(s)")
    context.log.info(f"force sync {piece}: {rows} rows, {total} USD")
    for asset in cost_assets:
        for day in dates.dates():
            yield dg.AssetMaterialization(
                asset_key=asset.key,
                partition=str(partition_key(piece.integration_id, day)),
                metadata={"force_sync": True, "slice_total_usd": format(total, "f")},
            )
    yield dg.Output(None)


@dg.job(
    name="force_sync",
    description="Force Sync: pull an integration's latest data (default yesterday and today) now. "
    "Launch from the UI with config {integration_id: ...}.",
)
def force_sync() -> None:
    force_sync_op()


@dg.asset_check(
    asset=fct_costs,
    name=FRESHNESS_CHECK.name,
    description="Freshness: yesterday's partition of every active integration is materialized "
    "by 09:00 UTC (evaluated by the 09:00 UTC schedule).",
)
def yesterday_synced(
    context: dg.AssetCheckExecutionContext, registry: RegistryResource
) -> dg.AssetCheckResult:
    yesterday = utc_today() - timedelta(days=1)
    done = context.instance.get_materialized_partitions(fct_costs.key)
    missing = [
        i.id
        for i in registry.open().list()
        if i.status == "active" and str(partition_key(i.id, yesterday)) not in done
    ]
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"date": yesterday.isoformat(), "missing": dg.MetadataValue.json(missing)},
    )


freshness_job = dg.define_asset_job(
    "freshness_check_job", selection=dg.AssetSelection.checks(yesterday_synced)
)

freshness_schedule = dg.ScheduleDefinition(
    name="freshness_0900_utc",
    cron_schedule="0 9 * * *",
    execution_timezone="UTC",
    job=freshness_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
