"""The cost assets: raw buckets -> fct_costs -> two rollups, partitioned by date x integration.

Connections come from warehouse.connect on the DuckDBResource's file (always closed, even when a
write fails: dagster-duckdb's get_connection leaves it open then). The four tables are
materialized by ONE step (a multi-asset): each slice is fetched, loaded,
normalized, rolled up and checked in one DuckDB transaction (see slice_sync), so the tables
never disagree, whatever fails. The lineage stays four assets named after their tables.
"""

import functools
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from grafient_pipeline import checks
from grafient_pipeline.defs.resources import CostsApiResource, RegistryResource
from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.partitions import NOTE_TAG, PLAN_DATE_TAG, cost_partitions, slices_for
from grafient_pipeline.plans import PlanError, check_range, judging_date
from grafient_pipeline.providers import get_provider, local_api_down, resolve_base_url
from grafient_pipeline.providers.base import CostsApiError, UpstreamError
from grafient_pipeline.registry import IntegrationNotFound, Registry, RegistryError
from grafient_pipeline.run_workers import PID_TAG, worker_tags
from grafient_pipeline.slice_sync import IntegrationRemoved, describe_failure, sync_slice
from grafient_pipeline.snapshot import publish_snapshot
from grafient_pipeline.sync import (
    IntegrationRow,
    Slice,
    refresh_dim_integrations,
    refresh_names,
    slice_totals,
    utc_today,
)
from grafient_pipeline.table_docs import COLUMN_DOCS
from grafient_pipeline.vault import MasterKeyError, VaultError
from grafient_pipeline.warehouse import connect

GROUP = "openai_costs"
KINDS = {"openai", "duckdb"}
RAW, FCT = "openai_cost_buckets", "fct_costs"
ROLLUPS = ("rollup_model_daily", "rollup_token_type_daily")
TABLE_OF = {RAW: "raw_openai_costs", FCT: "fct_costs", **{r: r for r in ROLLUPS}}


def _spec(name: str, description: str, deps: list[str]) -> dg.AssetSpec:
    return dg.AssetSpec(name, description=description, deps=deps, kinds=KINDS, group_name=GROUP)


def _check(name: str, asset: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking)


SPECS = [
    _spec(
        RAW,
        "Raw daily cost buckets from the OpenAI Costs API, one row per result "
        "(table raw_openai_costs), with each result's original JSON. Partitions: date x "
        "integration; OpenAI keeps about 180 days, so dates older than an integration's plan "
        "window are never fetched and show as missing in the UI.",
        [],
    ),
    _spec(
        FCT,
        "Normalized cost facts (table fct_costs): model, token type, service tier parsed from "
        "each line item; exact decimal USD; is_final false for today.",
        [RAW],
    ),
    _spec(
        "rollup_model_daily",
        "Spend per integration, day and model, split into input, output, cached input, cache "
        "writes and other (table rollup_model_daily).",
        [FCT],
    ),
    _spec(
        "rollup_token_type_daily",
        "Spend per integration, day and token type (table rollup_token_type_daily).",
        [FCT],
    ),
]
BLOCKING_BEFORE_COMMIT = " Checked before the slice is written: a failing slice is not written."
CHECK_SPECS = [
    _check(
        "single_currency",
        RAW,
        "Every amount is in US dollars (currency codes compare case-insensitively)."
        + BLOCKING_BEFORE_COMMIT,
        blocking=True,
    ),
    _check(
        "reconciles_with_raw",
        FCT,
        "Per integration and day, fct_costs sums to raw_openai_costs to the last decimal."
        + BLOCKING_BEFORE_COMMIT,
        blocking=True,
    ),
    _check(
        "line_items_recognized",
        FCT,
        "Every line item is one the parser knows: token charges, and non-token charges such as "
        "tool calls and storage (token_type 'other'). Warns on text it does not know (kept as "
        "'other' with its text, never dropped): a new word for grafient_pipeline/providers/openai/"
        "line_items.py.",
    ),
    _check("no_negative_amounts", FCT, "No negative amounts (credits, refunds)."),
    *(
        _check(
            "reconciles_with_fct",
            rollup,
            "Per integration and day, the rollup sums to fct_costs to the last decimal."
            + BLOCKING_BEFORE_COMMIT,
            blocking=True,
        )
        for rollup in ROLLUPS
    ),
]


def claim_run_worker(context: dg.OpExecutionContext | dg.AssetExecutionContext) -> None:
    """Record this process as the run's worker (see run_workers): the daemon launches runs
    without our tags, and a step holds the duckdb pool's only slot."""
    if PID_TAG not in context.run.tags:
        context.instance.add_run_tags(context.run.run_id, worker_tags())


def integration_rows(registry: Registry) -> list[IntegrationRow]:
    return [
        IntegrationRow(
            i.id, i.label, i.provider, i.plan, i.organization_id, i.status, i.last_synced_at
        )
        for i in registry.list()
    ]


def plan_date(tags: dict[str, str], today: date) -> date:
    """The date whose plan window judges this run (see plans.judging_date)."""
    try:
        requested_on = date.fromisoformat(tags[PLAN_DATE_TAG])
    except (KeyError, ValueError):
        requested_on = None
    return judging_date(requested_on, today)


def _validate(registry: Registry, slices: list[Slice], judged_on: date) -> None:
    """Refuse the whole run before any HTTP call: unknown integration or dates past the plan."""
    for piece in slices:
        try:
            integration = registry.get(piece.integration_id)
            check_range(integration.plan, piece.dates, judged_on)
        except (RegistryError, PlanError) as error:
            raise dg.Failure(f"{piece.integration_id}: {error}") from None


def _failed(
    context: dg.AssetExecutionContext,
    store: Registry,
    piece: Slice,
    error: Exception,
    base_url: str | None,
):
    """Record why a slice failed on its integration (status error, last_error) and say it.

    Failures of this machine rather than of the integration (a master key that does not fit,
    the demo's emulator not running) leave its status as it is."""
    reason = describe_failure(error)
    local_hint = local_api_down(base_url) if base_url else None
    if isinstance(error, IntegrationRemoved | IntegrationNotFound):
        reason = f"{piece.integration_id} was removed while it was syncing: nothing was written"
    elif isinstance(error, UpstreamError) and local_hint:
        reason = local_hint
    elif not _is_this_process(error):
        try:
            store.set_status(piece.integration_id, "error", reason)
        except IntegrationNotFound:
            reason = f"{piece.integration_id} was removed while it was syncing: {reason}"
    context.log.error(f"{piece}: {reason}")
    return dg.Failure(f"{piece.integration_id}: {reason}")


def _is_this_process(error: Exception) -> bool:
    """A failure of this process's environment (a master key that is missing, damaged or does
    not match the stored keys), not of the integration: its status stays as it is."""
    return isinstance(error, MasterKeyError)


def _sync(
    context: dg.AssetExecutionContext,
    piece: Slice,
    store: Registry,
    api: CostsApiResource,
    duckdb: DuckDBResource,
    staging_dir: Path,
) -> None:
    base_url = None
    try:
        integration = store.get(piece.integration_id)
        provider = get_provider(integration.provider)
        base_url = resolve_base_url(provider, integration.base_url)
        api_key = store.api_key(piece.integration_id)
        with api.client(provider, api_key, integration.base_url) as client:
            context.log.info(f"fetching {piece} from {provider.title}")
            synced = sync_slice(
                piece,
                provider,
                client,
                functools.partial(connect, duckdb.database),
                run_id=context.run.run_id,
                staging_dir=staging_dir,
                today=utc_today(),
                still_registered=lambda: _exists(store, piece.integration_id),
            )
    except Exception as error:
        raise _failed(context, store, piece, error, base_url) from None
    context.log.info(synced.describe())
    store.mark_synced(piece.integration_id, datetime.now(UTC))


def _refresh_names(
    context: dg.AssetExecutionContext,
    store: Registry,
    api: CostsApiResource,
    integration_id: str,
    database: str,
) -> None:
    """Project and API key names for an integration, read with its admin key: never a reason
    for a sync to fail (a key without permission for them gets a warning)."""
    integration = store.get(integration_id)
    provider = get_provider(integration.provider)
    try:
        key = store.api_key(integration.id)
        with api.client(provider, key, integration.base_url) as client:
            records = [*client.iter_projects(), *client.iter_api_keys()]
    except (CostsApiError, VaultError) as error:
        context.log.warning(f"{integration.id}: names of projects and keys skipped: {error}")
        return
    with connect(database) as conn:
        refresh_names(conn, provider.name, integration.id, records, datetime.now(UTC))


def _exists(store: Registry, integration_id: str) -> bool:
    try:
        store.get(integration_id)
    except IntegrationNotFound:
        return False
    return True


@dg.multi_asset(
    name="openai_costs",
    specs=SPECS,
    check_specs=CHECK_SPECS,
    partitions_def=cost_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    can_subset=False,
    description="Fetch, load, normalize, roll up and check a range of days of one or more "
    "integrations, one transaction per integration.",
)
def openai_costs(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBResource,
    costs_api: CostsApiResource,
    registry: RegistryResource,
):
    claim_run_worker(context)
    slices = slices_for(context.partition_keys)
    store = registry.open()
    tags = dict(context.run.tags)
    judged_on = plan_date(tags, utc_today())
    _validate(store, slices, judged_on)
    if tags.get(NOTE_TAG):
        context.log.info(tags[NOTE_TAG])
    with connect(duckdb.database) as conn:
        ensure_schema(conn)
        refresh_dim_integrations(conn, integration_rows(store))
    for piece in slices:
        _sync(context, piece, store, costs_api, duckdb, registry.settings.staging_dir)
    for integration_id in dict.fromkeys(piece.integration_id for piece in slices):
        _refresh_names(context, store, costs_api, integration_id, duckdb.database)
    with connect(duckdb.database) as conn:
        yield from _results(conn, slices)
        publish_snapshot(conn, registry.settings.snapshot_path)


def _results(conn: duckdb.DuckDBPyConnection, slices: list[Slice]):
    """Each table's materialization: what this run wrote, and the non-blocking checks (the
    blocking ones passed, or nothing would have been written)."""
    charges: dict[bool, dict[str, Decimal]] = {True: {}, False: {}}
    for piece in slices:
        for item, known, amount in checks.non_token_charges(conn, piece):
            charges[known][str(item)] = charges[known].get(str(item), Decimal(0)) + amount
    negatives = sum(checks.negative_amounts(conn, s) for s in slices)
    passed = {
        name: dg.AssetCheckResult(asset_key=asset, check_name=name, passed=True)
        for name, asset in (("single_currency", RAW), ("reconciles_with_raw", FCT))
    }
    yield dg.MaterializeResult(
        asset_key=RAW,
        metadata=_table_metadata(conn, RAW, slices),
        check_results=[passed["single_currency"]],
    )
    yield dg.MaterializeResult(
        asset_key=FCT,
        metadata=_table_metadata(conn, FCT, slices),
        check_results=[
            passed["reconciles_with_raw"],
            dg.AssetCheckResult(
                asset_key=FCT,
                check_name="line_items_recognized",
                passed=not charges[False],
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    f"{kind}_usd": dg.MetadataValue.json(
                        {item: format(amount, "f") for item, amount in charges[known].items()}
                    )
                    for kind, known in (("unrecognized", False), ("non_token_charges", True))
                },
            ),
            dg.AssetCheckResult(
                asset_key=FCT,
                check_name="no_negative_amounts",
                passed=negatives == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"negative_rows": negatives},
            ),
        ],
    )
    for rollup in ROLLUPS:
        metadata = _table_metadata(conn, rollup, slices)
        if rollup == "rollup_model_daily":
            metadata["run_top_models"] = _top_models(conn, slices)
        yield dg.MaterializeResult(
            asset_key=rollup,
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(asset_key=rollup, check_name="reconciles_with_fct", passed=True)
            ],
        )


def _table_metadata(
    conn: duckdb.DuckDBPyConnection, asset: str, slices: list[Slice]
) -> dict[str, object]:
    """`run_*` describe what the whole run wrote (Dagster repeats a run's metadata on each of
    its partitions); `dagster/row_count` is the whole table's, every integration."""
    table = TABLE_OF[asset]
    rows, total = 0, Decimal(0)
    for piece in slices:
        count, amount = slice_totals(conn, table, piece)
        rows, total = rows + count, total + amount
    (table_rows,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return {
        "dagster/row_count": int(table_rows),
        "run_rows": rows,
        "run_total_usd": dg.MetadataValue.text(format(total, "f")),
        "run_slices": dg.MetadataValue.text(", ".join(str(s) for s in slices)),
        "dagster/column_schema": _column_schema(conn, table),
    }


def _column_schema(conn: duckdb.DuckDBPyConnection, table: str) -> dg.TableSchema:
    columns = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    docs = COLUMN_DOCS.get(table, {})
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, str(kind), description=docs.get(name)) for name, kind in columns
        ]
    )


def _top_models(conn: duckdb.DuckDBPyConnection, slices: list[Slice]) -> dg.MetadataValue:
    lines = ["| model | USD |", "|---|---:|"]
    totals: dict[str, Decimal] = {}
    for piece in slices:
        for model, amount in conn.execute(
            "SELECT model, sum(amount_usd) FROM rollup_model_daily "
            "WHERE integration_id = $integration_id "
            "AND cost_date BETWEEN $start_date AND $end_date GROUP BY model",
            piece.params,
        ).fetchall():
            totals[model] = totals.get(model, Decimal(0)) + Decimal(amount)
    for model, amount in sorted(totals.items(), key=lambda kv: -kv[1])[:10]:
        lines.append(f"| {model} | {amount:.2f} |")
    return dg.MetadataValue.md("\n".join(lines))


cost_assets = [openai_costs]
