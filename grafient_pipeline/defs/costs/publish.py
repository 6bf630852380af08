"""When a cost run publishes the dashboard's snapshot: once per daily sync, not once per batch.

Publishing copies the marts into a new file (see grafient_pipeline.snapshot): seconds on a big
warehouse, and a daily sync of a fleet is tens of runs. Only the last of them to write needs to
publish, so a run of the daily sync (a batch of the schedule's tick, or a split of a failed one)
leaves it to a later one when one is certain to come: a run of the same sync that is queued, or
started but not yet at its step. Steps write one after the other (the duckdb pool has one slot),
and a step records its worker's pid on the run as it gets the slot (claim_run_worker), so a
started run without that tag has its write and its own decision still ahead of it. Any other
run (a manual sync, a backfill, an onboarding) always publishes, and so does a failed run that
is the last of its sync: the dashboard sees every write once its sync is over.
"""

from __future__ import annotations

import dagster as dg

from grafient_pipeline.partitions import PLAN_DATE_TAG, REASON_TAG
from grafient_pipeline.run_workers import PID_TAG

# The runs of one day's daily sync: its batches, and the splits of a failed batch.
DAILY_REASONS = ("daily", "split of a failed batch")
# Statuses of a run whose step may still be ahead of it.
_AHEAD = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def later_writer(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The id of a run of the same daily sync that will write (and decide to publish) after
    ``run``, or None when ``run`` must publish."""
    reason, plan_date = run.tags.get(REASON_TAG), run.tags.get(PLAN_DATE_TAG)
    if reason not in DAILY_REASONS or not plan_date:
        return None
    records = instance.get_run_records(
        dg.RunsFilter(
            job_name=run.job_name,
            statuses=_AHEAD,
            tags={PLAN_DATE_TAG: plan_date, REASON_TAG: list(DAILY_REASONS)},
        )
    )
    for record in records:
        other = record.dagster_run
        if other.run_id != run.run_id and PID_TAG not in other.tags:
            return other.run_id
    return None
