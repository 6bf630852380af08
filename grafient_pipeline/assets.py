"""The cost assets: raw buckets -> fct_costs -> two rollups, partitioned by date x integration.

Every asset writes DuckDB itself (pool "duckdb"), replaces exactly its slices in one transaction
per slice, and returns a MaterializeResult with its checks.
"""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from grafient_pipeline import checks
from grafient_pipeline.openai.client import CostsApiError, InvalidKeyError, PermissionDeniedError
from grafient_pipeline.partitions import cost_partitions, slices_for
from grafient_pipeline.plans import PlanError, check_range
from grafient_pipeline.registry import Registry, RegistryError
from grafient_pipeline.resources import OpenAICostsResource, RegistryResource
from grafient_pipeline.run_workers import PID_TAG, worker_tags
from grafient_pipeline.sync import (
    IntegrationRow,
    Slice,
    SliceLoader,
    build_fct_costs,
    build_rollup,
    refresh_dim_integrations,
    slice_totals,
    stage_chunks,
    staging_prefix,
    utc_today,
)
from grafient_pipeline.vault import VaultError
from grafient_pipeline.warehouse import ensure_schema

GROUP = "openai_costs"
# A staged file holds about this many results (10 days of a 10,000-a-day organization): loading
# one while the next is fetched and parsed keeps both cores busy and the disk use bounded.
ROWS_PER_STAGED_FILE = 100_000
KINDS = {"openai", "duckdb"}
COMMON = {
    "partitions_def": cost_partitions,
    "backfill_policy": dg.BackfillPolicy.single_run(),
    "pool": "duckdb",
    "group_name": GROUP,
}


def _check(name: str, asset: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking)


def _table_metadata(
    conn: duckdb.DuckDBPyConnection, table: str, slices: list[Slice]
) -> dict[str, object]:
    rows, total = 0, Decimal(0)
    for piece in slices:
        count, amount = slice_totals(conn, table, piece)
        rows, total = rows + count, total + amount
    columns = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return {
        "dagster/row_count": rows,
        "total_usd": dg.MetadataValue.text(format(total, "f")),
        "total_usd_rounded": float(round(total, 2)),
        "slices": dg.MetadataValue.text(", ".join(str(s) for s in slices)),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, str(kind)) for name, kind in columns]
        ),
    }


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
        lines.append(f"| {model} | {amount:.6f} |")
    return dg.MetadataValue.md("\n".join(lines))


def claim_run_worker(context: dg.OpExecutionContext | dg.AssetExecutionContext) -> None:
    """Record this process as the run's worker (see run_workers): the daemon launches runs
    without our tags, and a step holds the duckdb pool's only slot."""
    if PID_TAG not in context.run.tags:
        context.instance.add_run_tags(context.run.run_id, worker_tags())


def _integration_rows(registry: Registry) -> list[IntegrationRow]:
    return [
        IntegrationRow(
            i.id, i.label, i.provider, i.plan, i.organization_id, i.status, i.last_synced_at
        )
        for i in registry.list()
    ]


def _validate(registry: Registry, slices: list[Slice]) -> None:
    """Refuse the whole run before any HTTP call: unknown integration or dates past the plan."""
    today = utc_today()
    for piece in slices:
        try:
            integration = registry.get(piece.integration_id)
            check_range(integration.plan, piece.dates, today)
        except (RegistryError, PlanError) as error:
            raise dg.Failure(f"{piece.integration_id}: {error}") from None


def _fetch_and_load(
    context: dg.AssetExecutionContext,
    piece: Slice,
    registry: Registry,
    openai_api: OpenAICostsResource,
    duckdb: DuckDBResource,
    staging_dir: Path,
) -> None:
    """Fetch a slice and replace it in raw_openai_costs: staged files loaded while it streams."""
    try:
        api_key = registry.api_key(piece.integration_id)
    except VaultError as error:
        registry.set_status(piece.integration_id, "error", str(error))
        raise dg.Failure(f"{piece.integration_id}: {error}") from None
    loader = SliceLoader(duckdb.get_connection, piece, context.run.run_id)
    rows = buckets = 0
    try:
        with openai_api.client(api_key) as client:
            context.log.info(f"fetching {piece} from the OpenAI Costs API")
            fetched = client.iter_buckets(piece.dates.start, piece.dates.end)
            prefix = staging_prefix(context.run.run_id, piece)
            for staged in stage_chunks(fetched, staging_dir, prefix, ROWS_PER_STAGED_FILE):
                loader.put(staged)
                rows, buckets = rows + staged.rows, buckets + staged.buckets
            context.log.info(
                f"{piece}: {rows} results in {buckets} daily buckets, "
                f"{client.request_count} requests"
            )
    except CostsApiError as error:
        loader.abort()
        registry.set_status(piece.integration_id, "error", str(error))
        if isinstance(error, InvalidKeyError | PermissionDeniedError):
            context.log.error(f"{piece.integration_id} is now in error: {error}")
        raise dg.Failure(f"{piece.integration_id}: {error}") from None
    except BaseException:
        loader.abort()
        raise
    loader.finish()
    registry.mark_synced(piece.integration_id, datetime.now(UTC))


@dg.asset(
    **COMMON,
    kinds=KINDS,
    description="Raw daily cost buckets from the OpenAI Costs API, one row per result "
    "(table raw_openai_costs), with each result's original JSON.",
    check_specs=[
        _check(
            "single_currency",
            "openai_cost_buckets",
            "All results of a slice share one currency: mixed currencies are never summed.",
            blocking=True,
        )
    ],
)
def openai_cost_buckets(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBResource,
    openai_api: OpenAICostsResource,
    registry: RegistryResource,
) -> dg.MaterializeResult:
    claim_run_worker(context)
    slices = slices_for(context.partition_keys)
    store = registry.open()
    _validate(store, slices)
    for piece in slices:
        _fetch_and_load(context, piece, store, openai_api, duckdb, registry.settings.staging_dir)
    with duckdb.get_connection() as conn:
        refresh_dim_integrations(conn, _integration_rows(store))
        metadata = _table_metadata(conn, "raw_openai_costs", slices)
        mixed = {s.integration_id: checks.currencies(conn, s) for s in slices}
    mixed = {k: v for k, v in mixed.items() if len(v) > 1}
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="single_currency",
                passed=not mixed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "mixed": dg.MetadataValue.json({k: list(map(str, v)) for k, v in mixed.items()})
                },
            )
        ],
    )


@dg.asset(
    **COMMON,
    kinds=KINDS,
    deps=[openai_cost_buckets],
    description="Normalized cost facts (table fct_costs): model, token type, service tier "
    "parsed from each line item; exact decimal USD; is_final false for today.",
    check_specs=[
        _check(
            "reconciles_with_raw",
            "fct_costs",
            "Per integration and day, fct_costs sums to raw_openai_costs to the last decimal.",
            blocking=True,
        ),
        _check(
            "non_token_line_items",
            "fct_costs",
            "Line items that are not token charges (kept as token_type 'other', never dropped).",
        ),
        _check("no_negative_amounts", "fct_costs", "No negative amounts (credits, refunds)."),
    ],
)
def fct_costs(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    claim_run_worker(context)
    slices = slices_for(context.partition_keys)
    today = utc_today()
    with duckdb.get_connection() as conn:
        ensure_schema(conn)
        for piece in slices:
            build_fct_costs(conn, piece, today)
        mismatches = [
            m for s in slices for m in checks.reconcile(conn, "raw_openai_costs", "fct_costs", s)
        ]
        others: dict[str, Decimal] = {}
        for piece in slices:
            for item, amount in checks.non_token_line_items(conn, piece):
                others[str(item)] = others.get(str(item), Decimal(0)) + amount
        negatives = sum(checks.negative_amounts(conn, s) for s in slices)
        metadata = _table_metadata(conn, "fct_costs", slices)
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            _reconciliation_result("reconciles_with_raw", mismatches),
            dg.AssetCheckResult(
                check_name="non_token_line_items",
                passed=not others,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "line_items": dg.MetadataValue.json(
                        {item: format(amount, "f") for item, amount in others.items()}
                    )
                },
            ),
            dg.AssetCheckResult(
                check_name="no_negative_amounts",
                passed=negatives == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"negative_rows": negatives},
            ),
        ],
    )


def _reconciliation_result(name: str, mismatches: list[checks.Mismatch]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "mismatched_days": len(mismatches),
            "mismatches": dg.MetadataValue.json(
                [
                    {
                        "date": m.cost_date.isoformat(),
                        "upstream_usd": format(m.upstream_usd, "f"),
                        "downstream_usd": format(m.downstream_usd, "f"),
                    }
                    for m in mismatches[:20]
                ]
            ),
        },
    )


def _rollup(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource, table: str
) -> dg.MaterializeResult:
    claim_run_worker(context)
    slices = slices_for(context.partition_keys)
    with duckdb.get_connection() as conn:
        ensure_schema(conn)
        for piece in slices:
            build_rollup(conn, table, piece)
        mismatches = [m for s in slices for m in checks.reconcile(conn, "fct_costs", table, s)]
        metadata = _table_metadata(conn, table, slices)
        if table == "rollup_model_daily":
            metadata["top_models"] = _top_models(conn, slices)
    return dg.MaterializeResult(
        metadata=metadata, check_results=[_reconciliation_result("reconciles_with_fct", mismatches)]
    )


@dg.asset(
    **COMMON,
    kinds=KINDS,
    deps=[fct_costs],
    description="Spend per integration, day and model, split into input, output, cached input, "
    "cache writes and other (table rollup_model_daily).",
    check_specs=[
        _check(
            "reconciles_with_fct",
            "rollup_model_daily",
            "Per integration and day, the rollup sums to fct_costs to the last decimal.",
            blocking=True,
        )
    ],
)
def rollup_model_daily(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    return _rollup(context, duckdb, "rollup_model_daily")


@dg.asset(
    **COMMON,
    kinds=KINDS,
    deps=[fct_costs],
    description="Spend per integration, day and token type (table rollup_token_type_daily).",
    check_specs=[
        _check(
            "reconciles_with_fct",
            "rollup_token_type_daily",
            "Per integration and day, the rollup sums to fct_costs to the last decimal.",
            blocking=True,
        )
    ],
)
def rollup_token_type_daily(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    return _rollup(context, duckdb, "rollup_token_type_daily")


cost_assets = [openai_cost_buckets, fct_costs, rollup_model_daily, rollup_token_type_daily]
