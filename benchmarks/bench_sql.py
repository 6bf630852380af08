"""Warehouse queries at fleet scale: latency of the questions users ask DuckDB.

The warehouse: the fleet of bench_fleet.py (200 integrations x 300 results a day) with 180 days
of history before today (181 days in all, today included), generated in DuckDB as synthetic rows
that follow the fct_costs contract (line items from the emulator's catalogue, parsed by the
project's parser into dim_line_items; project and key ids shaped like OpenAI's, 8 projects
and 40 keys per organization; exact DECIMAL(38,16) amounts), inserted integration by
integration as onboarding backfills leave them, then rolled up by the project's own SQL models
(``rollup_model_daily``, ``rollup_token_type_daily``) slice by slice. ``--warehouse PATH`` times
an existing warehouse instead (e.g. one a real pipeline filled).

Timed, each as the median of several runs after one warm-up (the first, cold run is printed
too), on one open connection:
  1. month-to-date spend by model across all integrations (the v_month_to_date view);
  2. top 10 projects by spend, month to date (fct_costs);
  3. FOCUS export of one month: COPY (SELECT * FROM focus_costs <last complete month>) TO a
     Parquet file, for one integration and for the whole fleet (1.86M rows: that one is bound by
     the Parquet writer's throughput, so it is also shown with DuckDB's
     ``preserve_insertion_order = false``, which lets the writer use both cores).
Extra: top 10 projects over all 181 days (a full scan of fct_costs).

    .venv/bin/python benchmarks/bench_sql.py [--quick] [--warehouse PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import save_result, utc_today

from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.plans import DateRange
from grafient_pipeline.providers.openai.dim_line_items import insert_line_items
from grafient_pipeline.providers.openai.emulator import LINE_ITEMS
from grafient_pipeline.sync import Slice, build_rollup
from grafient_pipeline.warehouse import connect, transaction

TARGET_MS = 100.0
RESULTS_PER_DAY = 300
PROJECTS = 8
KEYS = 40


def build(path: Path, integrations: int, days: int, today: date) -> int:
    """Synthetic history in the fct_costs contract, then the rollups by the project's models."""
    start = today - timedelta(days=days - 1)
    with connect(str(path)) as conn:
        ensure_schema(conn)
        with transaction(conn):
            insert_line_items(conn, list(LINE_ITEMS))
            conn.execute(
                "INSERT INTO dim_integrations SELECT printf('fleet-%04d', i), printf('Fleet %04d',"
                " i), 'openai', 'pro', printf('org-fleet-%04d', i), 'active', now()::TIMESTAMP "
                "FROM range(?) t(i)",
                [integrations],
            )
        # One onboarding backfill per integration: its rows in date order, integration after
        # integration (how the table fills in production).
        conn.execute(
            """
            INSERT INTO fct_costs
            WITH items AS (
                SELECT row_number() OVER (ORDER BY line_item) - 1 AS n, * FROM dim_line_items
            ), leaves AS (
                SELECT i, d, r, hash(i, d, r) AS h
                FROM range($integrations) a(i), range($days) b(d), range($per_day) c(r)
            )
            SELECT
                printf('fleet-%04d', i),
                'openai',
                printf('org-fleet-%04d', i),
                $start::DATE + d::INTEGER,
                'proj_' || md5(printf('%d-%d', i, h % $projects))[:24],
                'key_' || md5(printf('%d-%d', i, (h >> 8) % $keys))[:16],
                items.line_item,
                items.model,
                items.token_type,
                items.service_tier,
                ((h >> 16) % 100000000000)::DECIMAL(38, 16) / 1000000000000,
                'usd',
                ((h >> 24) % 20000000)::DECIMAL(38, 16),
                'tokens',
                $start::DATE + d::INTEGER < $today::DATE
            FROM leaves JOIN items ON items.n = (h >> 40) % (SELECT count(*) FROM items)
            ORDER BY i, d
            """,
            {
                "integrations": integrations,
                "days": days,
                "per_day": RESULTS_PER_DAY,
                "start": start,
                "today": today,
                "projects": PROJECTS,
                "keys": KEYS,
            },
        )
        for i in range(integrations):
            piece = Slice(f"fleet-{i:04d}", DateRange(start, today))
            for model in ("rollup_model_daily", "rollup_token_type_daily"):
                build_rollup(conn, model, piece)
        (rows,) = conn.execute("SELECT count(*) FROM fct_costs").fetchone()
    return int(rows)


def month_bounds(today: date) -> tuple[date, date]:
    """The last complete calendar month."""
    first_this = today.replace(day=1)
    last_prev = first_this - timedelta(days=1)
    return last_prev.replace(day=1), first_this


UNORDERED = "SET preserve_insertion_order = false"


def queries(out_dir: Path, today: date, one: str) -> list[tuple[str, str, str | None]]:
    """(name, SQL, setting for that query or None)."""
    month, next_month = month_bounds(today)
    focus_month = (
        f"SELECT * FROM focus_costs WHERE ChargePeriodStart >= TIMESTAMP '{month}' "
        f"AND ChargePeriodStart < TIMESTAMP '{next_month}'"
    )
    top_projects = (
        "SELECT integration_id, project_id, sum(amount_usd) AS usd FROM fct_costs {where}"
        "GROUP BY ALL ORDER BY usd DESC LIMIT 10"
    )
    mtd = "WHERE cost_date >= date_trunc('month', (now() AT TIME ZONE 'UTC')::DATE) "
    return [
        (
            "month-to-date spend by model, all integrations",
            "SELECT model, sum(amount_usd) AS usd FROM v_month_to_date "
            "GROUP BY model ORDER BY usd DESC",
            None,
        ),
        ("top 10 projects, month to date", top_projects.format(where=mtd), None),
        ("top 10 projects, all 181 days (extra)", top_projects.format(where=""), None),
        (
            f"FOCUS export {month:%Y-%m}, one integration (Parquet)",
            f"COPY ({focus_month} AND x_IntegrationId = '{one}') "
            f"TO '{out_dir / 'focus_one.parquet'}' (FORMAT parquet)",
            None,
        ),
        (
            f"FOCUS export {month:%Y-%m}, all integrations (Parquet)",
            f"COPY ({focus_month}) TO '{out_dir / 'focus_all.parquet'}' (FORMAT parquet)",
            None,
        ),
        (
            f"FOCUS export {month:%Y-%m}, all integrations, {UNORDERED}",
            f"COPY ({focus_month}) TO '{out_dir / 'focus_all.parquet'}' (FORMAT parquet)",
            UNORDERED,
        ),
    ]


def time_query(conn, sql: str, repeats: int) -> tuple[float, float, int]:
    """(cold ms, median ms of the warm runs, rows)."""
    timings = []
    rows = 0
    for _ in range(repeats + 1):
        started = time.perf_counter()
        result = conn.execute(sql).fetchall()
        timings.append((time.perf_counter() - started) * 1000)
        rows = result[0][0] if sql.startswith("COPY") and result else len(result)
    return timings[0], statistics.median(timings[1:]), int(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 integrations (< 1 min)")
    parser.add_argument("--integrations", type=int)
    parser.add_argument("--warehouse", type=Path, help="time this warehouse (no generation)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    today = utc_today()
    with tempfile.TemporaryDirectory(prefix="grafient-sql-") as tmp:
        out = Path(tmp)
        path = args.warehouse
        if path is None:
            n = args.integrations or (20 if args.quick else 200)
            path = out / "warehouse.duckdb"
            started = time.perf_counter()
            rows = build(path, n, 181, today)
            print(
                f"sql benchmark: generated {n} integrations x 181 days x {RESULTS_PER_DAY} "
                f"results/day = {rows:,} fct_costs rows in {time.perf_counter() - started:.1f} s "
                f"({path.stat().st_size / 2**20:,.0f} MiB)",
                flush=True,
            )
        with connect(str(path), read_only=True) as conn:
            (one,) = conn.execute("SELECT min(integration_id) FROM fct_costs").fetchone()
            (rows,) = conn.execute("SELECT count(*) FROM fct_costs").fetchone()
            figures = {}
            for name, sql, setting in queries(out, today, one):
                if setting:
                    conn.execute(setting)
                cold, median, result_rows = time_query(conn, sql, args.repeats)
                if setting:
                    conn.execute("RESET preserve_insertion_order")
                ok = "met" if median < TARGET_MS else "NOT met"
                print(
                    f"  {name}: median {median:.1f} ms (cold {cold:.1f} ms), {result_rows:,} rows"
                    f" -> target < {TARGET_MS:.0f} ms {ok}",
                    flush=True,
                )
                figures[name] = {"median_ms": median, "cold_ms": cold, "rows": result_rows}
    path = save_result("sql_quick" if args.quick else "sql", {"fct_rows": rows, "queries": figures})
    print(f"  figures saved to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
