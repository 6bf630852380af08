"""Peer: the data of bench_backfill.py loaded by a dlt pipeline, written as a user would.

dlt's REST API source reads the same emulator (own process, same seed, clock and 180 days x
10,000 results a day, pre-warmed) with its cursor paginator following ``next_page`` while
``has_more`` is true, and loads a DuckDB destination with dlt's defaults: the buckets become
table ``costs`` and their results the child table ``costs__results`` (amounts as floats, as
dlt reads JSON). The run is a child process: wall time and peak RSS (``os.wait4``) as in
bench_backfill.py. Our figure is read from ``benchmarks/results/backfill[_quick].json`` (the
180-day run); without it, or if it covers other data, run bench_backfill.py first.

Two page sizes: the API's default page (7 buckets, what a user gets without ``limit``), and
``limit=180`` like our client (one page of 418 MB, which dlt reads whole into memory).

    .venv/bin/python benchmarks/bench_dlt.py [--quick] [--limits default,180]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    Emulator,
    Failed,
    days_ending,
    last_json_line,
    load_result,
    mib,
    midnight,
    org_keys,
    run_child,
    save_result,
    utc_today,
)


def child(
    base_url: str, start: date, end: date, limit: str, workdir: Path, loader: str | None
) -> None:
    """The dlt pipeline a user would write for the Costs API."""
    import dlt
    from dlt.sources.helpers.rest_client.paginators import JSONResponseCursorPaginator
    from dlt.sources.rest_api import rest_api_source

    params: dict[str, object] = {
        "start_time": midnight(start),
        "end_time": midnight(end) + 86_400,
        "bucket_width": "1d",
        "group_by[]": ["line_item", "project_id", "api_key_id"],
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
    pipeline = dlt.pipeline(
        pipeline_name="openai_costs",
        pipelines_dir=str(workdir / "dlt"),
        destination=dlt.destinations.duckdb(str(workdir / "dlt.duckdb")),
        dataset_name="openai_costs",
    )
    started = time.perf_counter()
    pipeline.run(source, loader_file_format=loader)
    wall = time.perf_counter() - started
    steps = {
        step.step: (step.finished_at - step.started_at).total_seconds()
        for step in pipeline.last_trace.steps
        if step.finished_at and step.started_at
    }
    with pipeline.sql_client() as client:
        rows, total = client.execute_sql("SELECT count(*), sum(amount__value) FROM costs__results")[
            0
        ]
    print(json.dumps({"run_wall_s": wall, "rows": rows, "total": total, "steps_s": steps}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 results a day (< 1 min)")
    parser.add_argument(
        "--limits", help="page sizes to run (default: 'default,180'; --quick: 'default')"
    )
    parser.add_argument(
        "--loader-file-format",
        help="dlt's loader file format (default: dlt's default for DuckDB, insert_values)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--end", help=argparse.SUPPRESS)
    parser.add_argument("--limit", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(
            args.base_url,
            date.fromisoformat(args.start),
            date.fromisoformat(args.end),
            args.limit,
            Path(args.workdir),
            args.loader_file_format,
        )
        return 0
    ours = load_result("backfill_quick" if args.quick else "backfill")
    per_day = 1_000 if args.quick else 10_000
    if ours is None or ours["results_per_day"] != per_day:
        raise Failed("no matching bench_backfill result: run benchmarks/bench_backfill.py first")
    our_run = max(ours["runs"], key=lambda r: r["days"])
    days = our_run["days"]
    (org,) = orgs = org_keys(1, "big")
    today = utc_today()
    start, end = days_ending(today, days)
    print(f"dlt peer: 1 integration, {per_day:,} results/day, {days} days, dlt REST API source")
    figures = {}
    with Emulator(orgs, per_day, clock=today + timedelta(days=1)) as emulator:
        emulator.warm(org, start, end)
        expected = emulator.expected_total(org, start, end)
        limits = args.limits or ("default" if args.quick else "default,180")
        for limit in limits.split(","):
            with tempfile.TemporaryDirectory(prefix="grafient-dlt-") as tmp:
                env = dict(
                    os.environ,
                    BENCH_ADMIN_KEY=orgs[org],
                    RUNTIME__DLTHUB_TELEMETRY="false",
                    PYTHONWARNINGS="ignore",
                )
                requests_before = emulator.request_count()
                run = run_child(
                    [
                        PYTHON,
                        __file__,
                        "--child",
                        "--base-url",
                        emulator.base_url,
                        "--start",
                        start.isoformat(),
                        "--end",
                        end.isoformat(),
                        "--limit",
                        limit,
                        "--workdir",
                        tmp,
                        *(
                            ["--loader-file-format", args.loader_file_format]
                            if args.loader_file_format
                            else []
                        ),
                    ],
                    env,
                )
                requests = emulator.request_count() - requests_before
            if run.returncode != 0:
                raise Failed(f"the dlt run (limit {limit}) exited {run.returncode}")
            out = last_json_line(run.stdout)
            if out["rows"] != our_run["rows"]:
                raise Failed(f"dlt loaded {out['rows']} results, ours {our_run['rows']}")
            drift = abs(float(expected) - float(out["total"]))
            rate = out["rows"] / out["run_wall_s"]
            ratio = our_run["rows_per_s"] / rate
            figures[limit] = {
                "run_wall_s": out["run_wall_s"],
                "process_wall_s": run.wall_s,
                "rows_per_s": rate,
                "peak_rss_bytes": run.max_rss_bytes,
                "http_requests": requests,
                "steps_s": out["steps_s"],
                "float_total_drift_usd": drift,
                "our_speedup": ratio,
            }
            print(
                f"  limit {limit}: {out['rows']:,} rows in {out['run_wall_s']:.1f} s "
                f"({rate:,.0f} rows/s; process {run.wall_s:.1f} s), peak RSS "
                f"{mib(run.max_rss_bytes)}, {requests} HTTP requests\n"
                "      steps: "
                + ", ".join(f"{k} {v:.1f} s" for k, v in out["steps_s"].items())
                + f"\n      float total off the exact one by {drift:.2e} USD\n"
                f"      ours: {our_run['rows_per_s']:,.0f} rows/s, peak RSS "
                f"{mib(our_run['peak_rss_bytes'])} -> ours is {ratio:.2f}x dlt's throughput "
                f"(target >= 3x: {'met' if ratio >= 3 else 'NOT met'}), "
                f"{run.max_rss_bytes / our_run['peak_rss_bytes']:.1f}x less memory",
                flush=True,
            )
    name = "dlt" + ("_quick" if args.quick else "")
    if args.loader_file_format:
        name += f"_{args.loader_file_format}"
    path = save_result(
        name,
        {
            "rows": our_run["rows"],
            "loader_file_format": args.loader_file_format,
            "ours": our_run,
            "dlt": figures,
        },
    )
    print(f"  figures saved to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
