"""The jobs that materialize the cost assets: the sync every automation launches, and Force
Sync (the same assets and checks under the name the UI shows)."""

import dagster as dg

from grafient_pipeline.defs.costs.assets import FCT, cost_assets

FRESHNESS_CHECK = dg.AssetCheckKey(dg.AssetKey(FCT), "yesterday_synced_by_0900_utc")
# The freshness check has its own 09:00 job: a sync run only runs the checks of its slices.
SYNC_SELECTION = dg.AssetSelection.assets(*cost_assets) - dg.AssetSelection.checks(FRESHNESS_CHECK)

openai_costs_job = dg.define_asset_job(
    "openai_costs_job",
    selection=SYNC_SELECTION,
    description="Fetch, normalize and roll up OpenAI costs for a date range of one or more "
    "integrations.",
)

force_sync = dg.define_asset_job(
    "force_sync",
    selection=SYNC_SELECTION,
    description="Force Sync: the same assets and checks as every sync, for the partitions you "
    "pick (an integration and its dates), now. `grafient sync ID` launches it for yesterday "
    "and today.",
)
