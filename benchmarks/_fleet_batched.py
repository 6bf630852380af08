"""What-if code location for ``bench_fleet.py --batch K`` (a design option, not the product).

The same assets, resources, jobs, sensor and freshness schedule as
``grafient_pipeline.definitions``, but ``daily_openai_sync`` asks for one run per group of K
integrations instead of one per integration: each run covers a rectangle of partitions (the
resync dates x K integrations that are contiguous in the dynamic partition order), which the
range tags express and the assets already handle (``slices_for`` splits a run into one slice per
integration). Batch size from GRAFIENT_BENCH_BATCH.
"""

from __future__ import annotations

import os

import dagster as dg

from grafient_pipeline.assets import cost_assets
from grafient_pipeline.automation import (
    force_sync,
    freshness_job,
    freshness_schedule,
    integrations_sensor,
    openai_costs_job,
    resync_window,
    yesterday_synced,
)
from grafient_pipeline.definitions import build_resources
from grafient_pipeline.partitions import partition_key
from grafient_pipeline.resources import RegistryResource
from grafient_pipeline.settings import load_settings

BATCH = int(os.environ.get("GRAFIENT_BENCH_BATCH", "20"))


def batches(partition_order: list[str], wanted: set[str], size: int) -> list[list[str]]:
    """Runs of at most ``size`` wanted keys that are contiguous in the partition order (a range
    of the dynamic dimension must not take in a key that is not wanted)."""
    groups: list[list[str]] = []
    current: list[str] = []
    for key in partition_order:
        if key in wanted:
            current.append(key)
            if len(current) == size:
                groups.append(current)
                current = []
        elif current:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


@dg.schedule(
    name="daily_openai_sync",
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    job=openai_costs_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_openai_sync_batched(
    context: dg.ScheduleEvaluationContext, registry: RegistryResource
) -> list[dg.RunRequest] | dg.SkipReason:
    dates = resync_window(context.scheduled_execution_time, registry.settings.resync_days)
    order = list(context.instance.get_dynamic_partitions("integrations"))
    wanted = {integration.id for integration in registry.open().list()}
    requests = [
        dg.RunRequest(
            run_key=f"daily:{group[0]}..{group[-1]}:{dates}",
            tags={
                "dagster/asset_partition_range_start": str(partition_key(group[0], dates.start)),
                "dagster/asset_partition_range_end": str(partition_key(group[-1], dates.end)),
                "grafient/reason": "daily",
            },
        )
        for group in batches(order, wanted, BATCH)
    ]
    return requests or dg.SkipReason("no integrations to sync")


defs = dg.Definitions(
    assets=cost_assets,
    asset_checks=[yesterday_synced],
    jobs=[openai_costs_job, force_sync, freshness_job],
    schedules=[daily_openai_sync_batched, freshness_schedule],
    sensors=[integrations_sensor],
    resources=build_resources(load_settings()),
    executor=dg.in_process_executor,
)
