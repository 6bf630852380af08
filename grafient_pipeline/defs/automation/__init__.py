"""Automation: the daily schedule, the sensors and the 09:00 UTC freshness check."""

import dagster as dg

from grafient_pipeline.defs.automation.freshness import (
    freshness_job,
    freshness_schedule,
    yesterday_synced,
)
from grafient_pipeline.defs.automation.schedules import daily_openai_sync
from grafient_pipeline.defs.automation.sensors import failed_batch_fallback, integrations_sensor

defs = dg.Definitions(
    asset_checks=[yesterday_synced],
    jobs=[freshness_job],
    schedules=[daily_openai_sync, freshness_schedule],
    sensors=[integrations_sensor, failed_batch_fallback],
)
