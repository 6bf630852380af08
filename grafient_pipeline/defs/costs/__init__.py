"""Costs: the cost tables as assets, and the jobs that materialize them."""

import dagster as dg

from grafient_pipeline.defs.costs.assets import cost_assets
from grafient_pipeline.defs.costs.jobs import force_sync, openai_costs_job

defs = dg.Definitions(assets=cost_assets, jobs=[openai_costs_job, force_sync])
