"""The one Definitions object that workspace.yaml and `dg` load: the defs/ folder's concerns plus
the resources, which depend on the settings of the process that loads them."""

from __future__ import annotations

import dagster as dg
from dagster_duckdb import DuckDBResource

from grafient_pipeline.defs import automation, costs, intelligence
from grafient_pipeline.defs.resources import CostsApiResource, RegistryResource
from grafient_pipeline.settings import LAKE_PREFIX, Settings, load_settings


def build_resources(settings: Settings) -> dict[str, object]:
    # A lake's catalog URL holds its password: the resource reads it from the environment, so
    # Dagster's UI shows the variable's name, not its value.
    lake = settings.warehouse.startswith(LAKE_PREFIX)
    database = dg.EnvVar("GRAFIENT_WAREHOUSE") if lake else settings.warehouse
    return {
        "duckdb": DuckDBResource(database=database),
        "costs_api": CostsApiResource(),
        "registry": RegistryResource(home=str(settings.home)),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions.merge(
        costs.defs,
        automation.defs,
        intelligence.defs,
        dg.Definitions(resources=build_resources(settings), executor=dg.in_process_executor),
    )


defs = build_definitions(load_settings())
