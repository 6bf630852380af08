"""What a cost run reports to Dagster: each table's materialization metadata and the results
of the non-blocking checks (the blocking ones passed, or nothing would have been written)."""

from decimal import Decimal

import dagster as dg
import duckdb

from grafient_pipeline import checks
from grafient_pipeline.sync import Slice, slice_totals
from grafient_pipeline.table_docs import COLUMN_DOCS

RAW, FCT = "openai_cost_buckets", "fct_costs"
ROLLUPS = ("rollup_model_daily", "rollup_token_type_daily")
TABLE_OF = {RAW: "raw_openai_costs", FCT: "fct_costs", **{r: r for r in ROLLUPS}}


def materializations(conn: duckdb.DuckDBPyConnection, slices: list[Slice]):
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
