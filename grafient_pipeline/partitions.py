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


def range_tags(integration_id: str, dates: DateRange) -> dict[str, str]:
    """Tags that make one run cover a date range of one integration (single-run backfill)."""
    return {
        "dagster/asset_partition_range_start": str(partition_key(integration_id, dates.start)),
        "dagster/asset_partition_range_end": str(partition_key(integration_id, dates.end)),
    }


def _dimensions(key: str) -> tuple[str, date]:
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims["integration"], date.fromisoformat(dims["date"])
    day, integration_id = key.split("|", 1)
    return integration_id, date.fromisoformat(day)


def slices_for(partition_keys: list[str]) -> list[Slice]:
    return slices_from_keys(_dimensions(key) for key in partition_keys)
