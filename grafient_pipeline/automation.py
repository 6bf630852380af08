"""What makes the pipeline run itself: jobs, the 06:00 UTC schedule, the onboarding sensor,
Force Sync and the 09:00 UTC freshness expectation."""

from collections import defaultdict
from datetime import date, datetime, timedelta

import dagster as dg

from grafient_pipeline.assets import FCT, cost_assets
from grafient_pipeline.partitions import (
    PLAN_DATE_TAG,
    contiguous_batches,
    integrations_partitions,
    partition_key,
    request_tags,
    run_slices,
)
from grafient_pipeline.plans import DateRange, clip_to_plan, upgrade_window, window_days
from grafient_pipeline.registry import Integration
from grafient_pipeline.resources import RegistryResource
from grafient_pipeline.run_workers import reap_dead_runs
from grafient_pipeline.sync import utc_today

FRESHNESS_CHECK = dg.AssetCheckKey(dg.AssetKey(FCT), "yesterday_synced_by_0900_utc")
# The freshness check has its own 09:00 job: a sync run only runs the checks of its slices.
SYNC_SELECTION = dg.AssetSelection.assets(*cost_assets) - dg.AssetSelection.checks(FRESHNESS_CHECK)

openai_costs_job = dg.define_asset_job(
    "openai_costs_job",
    selection=SYNC_SELECTION,
    description="Fetch, normalize and roll up OpenAI costs for a date range of one or more "
    "integrations.",
)

force_sync = dg.define_asset_job(
    "force_sync",
    selection=SYNC_SELECTION,
    description="Force Sync: the same assets and checks as every sync, for the partitions you "
    "pick (an integration and its dates), now. `grafient sync ID` launches it for yesterday "
    "and today.",
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
    tick = context.scheduled_execution_time
    dates = resync_window(tick, registry.settings.resync_days)
    groups = daily_groups(
        list(context.instance.get_dynamic_partitions("integrations")),
        registry.open().list(),
        registry.settings.sync_batch,
        dates,
        tick.date(),
    )
    requests = [
        dg.RunRequest(
            run_key=f"daily:{'..'.join(dict.fromkeys([group[0], group[-1]]))}:{window}",
            tags=request_tags(group, window, "daily", tick.date(), _clip_note(dates, window)),
        )
        for group, window in groups
    ]
    return requests or dg.SkipReason("no integrations to sync")


def _clip_note(asked: DateRange, window: DateRange) -> str:
    if window == asked:
        return ""
    return (
        f"GRAFIENT_RESYNC_DAYS asks for {asked}; these integrations' plan allows {window}, "
        "so that is what this run syncs"
    )


def daily_groups(
    order: list[str],
    integrations: list[Integration],
    size: int,
    dates: DateRange,
    today: date,
) -> list[tuple[list[str], DateRange]]:
    """The daily runs: (integrations, dates) rectangles. Each integration's dates are the resync
    window clipped to its plan; healthy ones with the same dates are batched, each one in error
    runs on its own.

    A run per integration costs a process start and Dagster's bookkeeping (seconds); a batch
    shares them. An integration in error (revoked key) would fail every batch it is in, so it
    gets its own run, where its error is plainly its own.
    """
    known = set(order)
    healthy: dict[DateRange, set[str]] = defaultdict(set)
    failing: list[tuple[list[str], DateRange]] = []
    for integration in integrations:
        window = clip_to_plan(dates, integration.plan, today)
        if integration.id not in known or window is None:
            continue
        if integration.status == "error":
            failing.append(([integration.id], window))
        else:
            healthy[window].add(integration.id)
    batched = [
        (group, window)
        for window, wanted in sorted(healthy.items(), key=lambda kv: kv[0].start)
        for group in contiguous_batches(order, wanted, size)
    ]
    return batched + failing


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
                **request_tags(
                    [piece.integration_id],
                    piece.dates,
                    "split of a failed batch",
                    _requested_on(run.tags),
                ),
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
                tags=request_tags([integration.id], window, reason, today),
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


def _requested_on(tags: dict[str, str]) -> date:
    try:
        return date.fromisoformat(tags[PLAN_DATE_TAG])
    except (KeyError, ValueError):
        return utc_today()


@dg.asset_check(
    asset=FCT,
    name=FRESHNESS_CHECK.name,
    description="Freshness: yesterday's partition of every active integration is materialized "
    "by 09:00 UTC (evaluated by the 09:00 UTC schedule).",
)
def yesterday_synced(
    context: dg.AssetCheckExecutionContext, registry: RegistryResource
) -> dg.AssetCheckResult:
    yesterday = utc_today() - timedelta(days=1)
    done = context.instance.get_materialized_partitions(dg.AssetKey(FCT))
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
