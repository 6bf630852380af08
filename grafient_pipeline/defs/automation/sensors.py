"""Sensors: onboarding and plan-upgrade backfills, partitions in step with the registry, dead-run
reaping, and the split of a failed daily batch."""

from datetime import date

import dagster as dg

from grafient_pipeline.defs.costs.jobs import openai_costs_job
from grafient_pipeline.defs.resources import RegistryResource
from grafient_pipeline.partitions import (
    PLAN_DATE_TAG,
    integrations_partitions,
    request_tags,
    run_slices,
)
from grafient_pipeline.plans import upgrade_window, window_days
from grafient_pipeline.run_workers import reap_dead_runs
from grafient_pipeline.sync import utc_today


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
