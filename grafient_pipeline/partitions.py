"""The date x integration partitions every cost asset shares."""

from __future__ import annotations

from datetime import date

import dagster as dg

from grafient_pipeline.plans import DateRange
from grafient_pipeline.sync import Slice, slices_from_keys

# Fixed on purpose: a start computed from "now" differs between the webserver, the daemon and
# run processes (they load the code at different times) and breaks runs.
FIRST_DATE = "2025-01-01"

integrations_partitions = dg.DynamicPartitionsDefinition(name="integrations")
date_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DATE, timezone="UTC", end_offset=1)
cost_partitions = dg.MultiPartitionsDefinition(
    {"date": date_partitions, "integration": integrations_partitions}
)


def partition_key(integration_id: str, day: date) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day.isoformat(), "integration": integration_id})


RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# The UTC date whose plan window the run was requested in: a run that waited past midnight for
# the duckdb slot is judged by the window it was asked for, not by the next day's.
PLAN_DATE_TAG = "grafient/plan_date"
REASON_TAG = "grafient/reason"
NOTE_TAG = "grafient/note"


def range_tags(integration_id: str, dates: DateRange) -> dict[str, str]:
    """Tags that make one run cover a date range of one integration (single-run backfill)."""
    return batch_tags([integration_id], dates)


def request_tags(
    integration_ids: list[str], dates: DateRange, reason: str, plan_date: date, note: str = ""
) -> dict[str, str]:
    """Everything a run we request carries: its rectangle of partitions, why, and the date whose
    plan window allowed it."""
    tags = {
        **batch_tags(integration_ids, dates),
        REASON_TAG: reason,
        PLAN_DATE_TAG: plan_date.isoformat(),
    }
    return {**tags, NOTE_TAG: note} if note else tags


def batch_tags(integration_ids: list[str], dates: DateRange) -> dict[str, str]:
    """Tags that make one run cover ``dates`` x integrations that are contiguous in the
    integrations' partition order (a range of a two-dimension partitioning is a rectangle)."""
    return {
        RANGE_START_TAG: str(partition_key(integration_ids[0], dates.start)),
        RANGE_END_TAG: str(partition_key(integration_ids[-1], dates.end)),
    }


def contiguous_batches(order: list[str], wanted: set[str], size: int) -> list[list[str]]:
    """The wanted keys in groups of at most ``size`` that are contiguous in ``order``: a range of
    the integrations dimension must not take in an integration that is not wanted."""
    groups: list[list[str]] = []
    current: list[str] = []
    for key in order:
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


def run_slices(tags: dict[str, str], instance: dg.DagsterInstance) -> list[Slice]:
    """The slices a range run covers, from its tags (empty if it is not a range run)."""
    if RANGE_START_TAG not in tags or RANGE_END_TAG not in tags:
        return []
    keys = cost_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(tags[RANGE_START_TAG], tags[RANGE_END_TAG]),
        dynamic_partitions_store=instance,
    )
    return slices_for(list(keys))


def _dimensions(key: str) -> tuple[str, date]:
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims["integration"], date.fromisoformat(dims["date"])
    day, integration_id = key.split("|", 1)
    return integration_id, date.fromisoformat(day)


def slices_for(partition_keys: list[str]) -> list[Slice]:
    return slices_from_keys(_dimensions(key) for key in partition_keys)
