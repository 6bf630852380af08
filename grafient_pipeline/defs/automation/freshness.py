"""The 09:00 UTC freshness expectation: yesterday landed for every active integration."""

from datetime import timedelta

import dagster as dg

from grafient_pipeline.defs.costs.assets import FCT
from grafient_pipeline.defs.costs.jobs import FRESHNESS_CHECK
from grafient_pipeline.defs.resources import RegistryResource
from grafient_pipeline.partitions import partition_key
from grafient_pipeline.sync import utc_today


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
