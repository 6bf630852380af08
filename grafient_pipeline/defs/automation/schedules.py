"""The 06:00 UTC daily sync: re-pull the trailing days of every integration, in batches."""

from collections import defaultdict
from datetime import date, datetime, timedelta

import dagster as dg

from grafient_pipeline.defs.costs.jobs import openai_costs_job
from grafient_pipeline.defs.resources import RegistryResource
from grafient_pipeline.partitions import contiguous_batches, request_tags
from grafient_pipeline.plans import DateRange, clip_to_plan
from grafient_pipeline.registry import Integration


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
