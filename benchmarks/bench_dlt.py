"""Peers, side by side in ONE run: ours and two dlt pipelines on the same emulator data.

One emulator (own process, fixed seed and clock, pre-warmed) serves, in this order:

1. ours: ``grafient backfill``'s path (bench_backfill.py's run process: a fresh instance, one
   Dagster run of openai_cost_buckets -> fct_costs -> both rollups with their checks);
2. dlt, the expert peer: a ``@dlt.resource`` that pages the Costs API with httpx (``limit``
   buckets a page, default 30), decodes each page with msgspec into typed structs (amounts as
   exact ``Decimal``) and yields one Arrow table per page (``decimal128(38, 16)`` amounts) to
   dlt's DuckDB destination;
3. dlt, natural: dlt's REST API source as a user writes it (cursor paginator on
   ``next_page``/``has_more``, dlt's defaults; amounts become floats), at the API's default page
   (7 buckets) and, in the full run, also ``limit=180`` (one 418 MB page, read whole).

Each run is a child process: wall time and peak RSS (``os.wait4``). Ours and the Arrow peer must
load exactly the emulator's total (the benchmark fails otherwise); the natural source's float
total is reported with its distance from the exact one. Prints each ratio and the issue-18
targets (ours >= 2.5x the expert peer and >= 250,000 rows/s end to end, peak RSS < 512 MiB).
Needs dlt[duckdb], pyarrow and msgspec in the venv (the ``bench`` extra).

    .venv/bin/python benchmarks/bench_dlt.py [--quick] [--limits default,180|none] \
        [--arrow-limit 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_backfill
from _common import (
    PYTHON,
    Emulator,
    Failed,
    days_ending,
    last_json_line,
    mib,
    midnight,
    org_keys,
    run_child,
    save_result,
    utc_today,
)

GROUP_BY = ["line_item", "project_id", "api_key_id"]
TARGET_RATIO = 2.5  # ours / the expert dlt peer, in rows per second
TARGET_ROWS_PER_S = 250_000
TARGET_RSS = 512 * 2**20


# The expert peer's typed page (msgspec), at module level so its annotations resolve.
class Amount(msgspec.Struct):
    value: Decimal  # msgspec reads a JSON number's exact text into the Decimal
    currency: str | None = None


class Result(msgspec.Struct):
    amount: Amount
    line_item: str | None = None
    project_id: str | None = None
    api_key_id: str | None = None
    quantity: Decimal | None = None
    quantity_unit: str | None = None


class Bucket(msgspec.Struct):
    start_time: int
    end_time: int
    results: list[Result]


class Page(msgspec.Struct):
    data: list[Bucket]
    has_more: bool = False
    next_page: str | None = None


def _pipeline(workdir: Path) -> Any:
    import dlt

    return dlt.pipeline(
        pipeline_name="openai_costs",
        pipelines_dir=str(workdir / "dlt"),
        destination=dlt.destinations.duckdb(str(workdir / "dlt.duckdb")),
        dataset_name="openai_costs",
    )


def _timed_run(pipeline: Any, data: Any, table: str, amount: str, **options: Any) -> None:
    """Run the pipeline, then print its wall time, steps, row count and total as one JSON line."""
    started = time.perf_counter()
    pipeline.run(data, **options)
    wall = time.perf_counter() - started
    steps = {
        step.step: (step.finished_at - step.started_at).total_seconds()
        for step in pipeline.last_trace.steps
        if step.finished_at and step.started_at
    }
    with pipeline.sql_client() as client:
        rows, total = client.execute_sql(f"SELECT count(*), sum({amount}) FROM {table}")[0]
    total = format(total, "f") if isinstance(total, Decimal) else total
    print(json.dumps({"run_wall_s": wall, "rows": rows, "total": total, "steps_s": steps}))


def child_natural(
    base_url: str, start: date, end: date, limit: str, workdir: Path, loader: str | None
) -> None:
    """The dlt pipeline a user would write for the Costs API: dlt's REST API source."""
    from dlt.sources.helpers.rest_client.paginators import JSONResponseCursorPaginator
    from dlt.sources.rest_api import rest_api_source

    params: dict[str, object] = {
        "start_time": midnight(start),
        "end_time": midnight(end) + 86_400,
        "bucket_width": "1d",
        "group_by[]": GROUP_BY,
    }
    if limit != "default":
        params["limit"] = int(limit)
    source = rest_api_source(
        {
            "client": {
                "base_url": base_url + "/",
                "auth": {"type": "bearer", "token": os.environ["BENCH_ADMIN_KEY"]},
                "paginator": JSONResponseCursorPaginator(
                    cursor_path="next_page", cursor_param="page", has_more_path="has_more"
                ),
            },
            "resources": [
                {
                    "name": "costs",
                    "endpoint": {
                        "path": "organization/costs",
                        "params": params,
                        "data_selector": "data",
                    },
                }
            ],
        }
    )
    pipeline = _pipeline(workdir)
    _timed_run(pipeline, source, "costs__results", "amount__value", loader_file_format=loader)


def child_arrow(base_url: str, start: date, end: date, limit: int, workdir: Path) -> None:
    """The dlt pipeline an expert writes: typed msgspec decoding, one Arrow table per page."""
    import dlt
    import httpx
    import pyarrow as pa

    decode = msgspec.json.Decoder(Page).decode
    exact = pa.decimal128(38, 16)  # pyarrow refuses a value that would lose digits

    def table(page: Page) -> Any:
        starts: list[int] = []
        results: list[Result] = []
        for bucket in page.data:
            starts += [bucket.start_time] * len(bucket.results)
            results += bucket.results
        return pa.table(
            {
                "bucket_start": pa.array(starts, pa.int64()),
                "line_item": pa.array([r.line_item for r in results], pa.string()),
                "project_id": pa.array([r.project_id for r in results], pa.string()),
                "api_key_id": pa.array([r.api_key_id for r in results], pa.string()),
                "amount_value": pa.array([r.amount.value for r in results], exact),
                "currency": pa.array([r.amount.currency for r in results], pa.string()),
                "quantity": pa.array([r.quantity for r in results], exact),
                "quantity_unit": pa.array([r.quantity_unit for r in results], pa.string()),
            }
        )

    @dlt.resource(name="costs", write_disposition="replace")
    def costs() -> Any:
        query: list[tuple[str, str | int]] = [
            ("start_time", midnight(start)),
            ("end_time", midnight(end) + 86_400),
            ("bucket_width", "1d"),
            ("limit", limit),
        ]
        query += [("group_by[]", dimension) for dimension in GROUP_BY]
        headers = {"Authorization": f"Bearer {os.environ['BENCH_ADMIN_KEY']}"}
        cursor = None
        with httpx.Client(base_url=base_url + "/", headers=headers, timeout=600) as client:
            while True:
                paging = [("page", cursor)] if cursor else []
                response = client.get("organization/costs", params=query + paging)
                response.raise_for_status()
                page = decode(response.content)
                if any(bucket.results for bucket in page.data):
                    yield table(page)
                if not page.has_more:
                    return
                cursor = page.next_page

    _timed_run(_pipeline(workdir), costs(), "costs", "amount_value")


def _child_argv(kind: str, base_url: str, start: date, end: date, limit: str, tmp: str) -> list:
    return [
        PYTHON, __file__, "--child", kind, "--base-url", base_url, "--start", start.isoformat(),
        "--end", end.isoformat(), "--limit", limit, "--workdir", tmp,
    ]  # fmt: skip


def run_peer(
    emulator: Emulator, org: str, argv: list[str], what: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One dlt child run: its figures and its JSON output (fails loudly if it failed)."""
    env = dict(
        os.environ,
        BENCH_ADMIN_KEY=emulator.orgs[org],
        RUNTIME__DLTHUB_TELEMETRY="false",
        PYTHONWARNINGS="ignore",
    )
    requests_before = emulator.request_count()
    run = run_child(argv, env)
    requests = emulator.request_count() - requests_before
    if run.returncode != 0:
        raise Failed(f"the {what} run exited {run.returncode}")
    out = last_json_line(run.stdout)
    figures = {
        "rows": out["rows"],
        "run_wall_s": out["run_wall_s"],
        "process_wall_s": run.wall_s,
        "rows_per_s": out["rows"] / out["run_wall_s"],
        "process_rows_per_s": out["rows"] / run.wall_s,
        "peak_rss_bytes": run.max_rss_bytes,
        "process_cpu_s": run.cpu_s,
        "http_requests": requests,
        "steps_s": out["steps_s"],
    }
    return figures, out


def describe(name: str, f: dict[str, Any]) -> str:
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in f.get("steps_s", {}).items())
    return (
        f"  {name}: {f['rows']:,} rows, run {f['run_wall_s']:.2f} s = {f['rows_per_s']:,.0f} "
        f"rows/s (process {f['process_wall_s']:.2f} s = {f['process_rows_per_s']:,.0f} rows/s, "
        f"CPU {f['process_cpu_s']:.1f} s), peak RSS {mib(f['peak_rss_bytes'])}, "
        f"{f['http_requests']} HTTP requests" + (f"\n      dlt steps: {steps}" if steps else "")
    )


def measure_ours(emulator: Emulator, org: str, days: int) -> dict[str, Any]:
    """bench_backfill.py's run (which fails unless every table's total is exact)."""
    with tempfile.TemporaryDirectory(prefix="grafient-bench-") as tmp:
        m = bench_backfill.measure(emulator, org, days, Path(tmp), {})
    return {**m, "process_rows_per_s": m["rows"] / m["process_wall_s"], "steps_s": {}}


def _ratios(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, float]:
    """Our throughput over the peer's (run; whole process) and the peer's memory over ours."""
    return {
        "run": ours["rows_per_s"] / peer["rows_per_s"],
        "process": ours["process_rows_per_s"] / peer["process_rows_per_s"],
        "memory": peer["peak_rss_bytes"] / ours["peak_rss_bytes"],
    }


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 results a day (~2 min)")
    parser.add_argument(
        "--limits",
        help="natural source page sizes (default: 'default,180'; --quick: 'default'; 'none': "
        "skip it, at 1.8M rows it runs for minutes in GBs of memory)",
    )
    parser.add_argument(
        "--arrow-limit", type=int, default=30, help="buckets a page for the Arrow peer (30)"
    )
    parser.add_argument(
        "--loader-file-format",
        help="the natural source's loader file format (default: dlt's for DuckDB, insert_values)",
    )
    parser.add_argument("--child", choices=["natural", "arrow"], help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--end", help=argparse.SUPPRESS)
    parser.add_argument("--limit", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
        if args.child == "arrow":
            child_arrow(args.base_url, start, end, int(args.limit), Path(args.workdir))
        else:
            loader = args.loader_file_format
            child_natural(args.base_url, start, end, args.limit, Path(args.workdir), loader)
        return 0
    per_day, days = (1_000 if args.quick else 10_000), 180
    (org,) = orgs = org_keys(1, "big")
    today = utc_today()
    start, end = days_ending(today, days)
    print(f"peers: 1 integration, {per_day:,} results/day, {days} days, one emulator", flush=True)
    with Emulator(orgs, per_day, clock=today + timedelta(days=1)) as emulator:
        emulator.warm(org, start, end)
        expected = emulator.expected_total(org, start, end)
        ours = measure_ours(emulator, org, days)
        print(describe("ours (grafient backfill's run)", ours), flush=True)
        print(f"      exact: raw = fct = both rollups = {expected} USD", flush=True)
        with tempfile.TemporaryDirectory(prefix="grafient-dlt-") as tmp:
            argv = _child_argv("arrow", emulator.base_url, start, end, str(args.arrow_limit), tmp)
            arrow, out = run_peer(emulator, org, argv, "dlt Arrow")
        if out["rows"] != ours["rows"] or Decimal(out["total"]) != expected:
            raise Failed(
                f"dlt Arrow loaded {out['rows']} rows totalling {out['total']} USD; "
                f"expected {ours['rows']} rows and {expected} USD exactly"
            )
        print(describe(f"dlt Arrow resource (limit {args.arrow_limit})", arrow), flush=True)
        print("      exact: its total equals the emulator's", flush=True)
        natural: dict[str, dict[str, Any]] = {}
        limits = args.limits or ("default" if args.quick else "default,180")
        for limit in [] if limits == "none" else limits.split(","):
            with tempfile.TemporaryDirectory(prefix="grafient-dlt-") as tmp:
                argv = _child_argv("natural", emulator.base_url, start, end, limit, tmp)
                if args.loader_file_format:
                    argv += ["--loader-file-format", args.loader_file_format]
                figures, out = run_peer(emulator, org, argv, f"dlt REST API (limit {limit})")
            if out["rows"] != ours["rows"]:
                raise Failed(f"dlt loaded {out['rows']} results, ours {ours['rows']}")
            figures["float_total_drift_usd"] = abs(float(expected) - float(out["total"]))
            natural[limit] = figures
            print(describe(f"dlt REST API source (limit {limit})", figures), flush=True)
            drift = figures["float_total_drift_usd"]
            print(f"      float total off the exact one by {drift:.2e} USD", flush=True)
    ratios = {"dlt Arrow resource": _ratios(ours, arrow)}
    ratios.update({f"dlt REST API ({k})": _ratios(ours, v) for k, v in natural.items()})
    print("\n  ours / peer, rows per second over the run (over the whole process); peer memory:")
    for name, r in ratios.items():
        print(
            f"    {name:<26} {r['run']:6.2f}x ({r['process']:.2f}x)   "
            f"{r['memory']:.1f}x our peak RSS"
        )
    expert, rate, rss = (
        ratios["dlt Arrow resource"]["run"],
        ours["rows_per_s"],
        ours["peak_rss_bytes"],
    )
    print(
        f"\n  issue-18 targets (judged on the full run, 1.8M rows): >= {TARGET_RATIO}x the expert "
        f"peer: {expert:.2f}x, {_verdict(expert >= TARGET_RATIO)}; >= {TARGET_ROWS_PER_S:,} "
        f"rows/s: {rate:,.0f}, {_verdict(rate >= TARGET_ROWS_PER_S)}; peak RSS < 512 MiB: "
        f"{mib(rss)}, {_verdict(rss < TARGET_RSS)}"
        + (" (--quick: a tenth of the data)" if args.quick else "")
    )
    name = "dlt" + ("_quick" if args.quick else "")
    if args.loader_file_format:
        name += f"_{args.loader_file_format}"
    path = save_result(
        name,
        {
            "rows": ours["rows"],
            "results_per_day": per_day,
            "days": days,
            "expected_total_usd": format(expected, "f"),
            "arrow_limit": args.arrow_limit,
            "loader_file_format": args.loader_file_format,
            "ours": ours,
            "dlt_arrow": arrow,
            "dlt": natural,
            "ratios": ratios,
        },
    )
    print(f"  figures saved to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
