"""The one Definitions object that workspace.yaml loads."""

from __future__ import annotations

import dagster as dg
from dagster_duckdb import DuckDBResource

from grafient_pipeline.assets import cost_assets
from grafient_pipeline.automation import (
    daily_openai_sync,
    failed_batch_fallback,
    force_sync,
    freshness_job,
    freshness_schedule,
    integrations_sensor,
    openai_costs_job,
    yesterday_synced,
)
from grafient_pipeline.defs.intelligence import intelligence_definitions
from grafient_pipeline.resources import OpenAICostsResource, RegistryResource
from grafient_pipeline.settings import Settings, load_settings


def build_resources(settings: Settings) -> dict[str, object]:
    return {
        "duckdb": DuckDBResource(database=settings.warehouse),
        "openai_api": OpenAICostsResource(base_url=settings.openai_base_url),
        "registry": RegistryResource(home=str(settings.home)),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    costs = dg.Definitions(
        assets=cost_assets,
        asset_checks=[yesterday_synced],
        jobs=[openai_costs_job, force_sync, freshness_job],
        schedules=[daily_openai_sync, freshness_schedule],
        sensors=[integrations_sensor, failed_batch_fallback],
        resources=build_resources(settings),
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(costs, intelligence_definitions())


defs = build_definitions(load_settings())
