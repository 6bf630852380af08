"""Big-organization backfill: one integration, 180 days x 10,000 results a day, in ONE Dagster run.

The emulator runs in its own process (own core) with a fixed clock (tomorrow 00:00 UTC, so all
180 days up to today are complete) and is pre-warmed with one request before timing. The
pipeline runs in a child process: a fresh GRAFIENT_HOME and DAGSTER_HOME instance
(``prepare_home``), the integration in the registry, its partition added, then
``openai_costs_job.execute_in_process`` with the range tags a single-run backfill uses (the
in-process path ``grafient backfill`` takes without a webserver): openai_cost_buckets ->
fct_costs -> both rollups, asset checks included.

Prints wall time, rows/s, peak RSS of the run process (its ``ru_maxrss`` via ``os.wait4``),
HTTP requests, emulator CPU, per-asset step times; runs 30 days and 180 days to show memory does
not grow with the range; fails loudly unless every table's total equals the emulator's expected
total exactly. Writes ``benchmarks/results/backfill[_quick].json`` (bench_dlt.py runs
its own measurement of the same path, beside the dlt peers).

    .venv/bin/python benchmarks/bench_backfill.py [--quick]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    Emulator,
    Failed,
    days_ending,
    last_json_line,
    mib,
    org_keys,
    pipeline_env,
    run_child,
    save_result,
    utc_today,
)

TABLES = ("raw_openai_costs", "fct_costs", "rollup_model_daily", "rollup_token_type_daily")
TARGET_ROWS_PER_S = 100_000
TARGET_RSS = 1 << 30


def child(days: int, org: str) -> None:
    """The run process: set up the instance and registry, then time one range run."""
    started = time.perf_counter()
    import dagster as dg

    from grafient_pipeline.definitions import build_definitions
    from grafient_pipeline.instance import prepare_home
    from grafient_pipeline.partitions import range_tags
    from grafient_pipeline.plans import DateRange
    from grafient_pipeline.registry import Registry
    from grafient_pipeline.settings import load_settings
    from grafient_pipeline.warehouse import connect

    imported = time.perf_counter()
    settings = load_settings()
    prepare_home(settings)
    registry = Registry.from_settings(settings)
    integration = registry.add(
        "Big Org", "ultimate", os.environ["BENCH_ADMIN_KEY"], organization_id=org
    )
    start, end = days_ending(utc_today(), days)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("integrations", [integration.id])
        job = build_definitions(settings).resolve_job_def("openai_costs_job")
        profiler = _profiler()
        ready, cpu_ready = time.perf_counter(), time.process_time()
        result = job.execute_in_process(
            instance=instance,
            tags=range_tags(integration.id, DateRange(start, end)),
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        run_wall = time.perf_counter() - ready
        run_cpu = time.process_time() - cpu_ready
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.environ["BENCH_PROFILE"])
        steps = _step_seconds(instance, result.run_id)
        messages = [
            (e.timestamp, e.user_message)
            for e in instance.all_logs(result.run_id)
            if e.dagster_event is None
        ]
    totals: dict[str, dict[str, object]] = {}
    with connect(settings.warehouse, read_only=True) as conn:
        for table in TABLES:
            amount = "amount_value" if table == "raw_openai_costs" else "amount_usd"
            rows, total = conn.execute(
                f"SELECT count(*), coalesce(sum({amount}), 0) FROM {table}"
            ).fetchone()
            totals[table] = {"rows": rows, "total": format(Decimal(total), "f")}
    fetch_s = _fetch_seconds(messages)
    print(
        json.dumps(
            {
                "success": result.success,
                "integration_id": integration.id,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "import_s": imported - started,
                "setup_s": ready - imported,
                "run_wall_s": run_wall,
                "run_cpu_s": run_cpu,
                "steps_s": steps,
                "fetch_s": fetch_s,
                "tables": totals,
                "vm_hwm_bytes": _vm_hwm(),
            }
        ),
        flush=True,
    )


def _step_seconds(instance, run_id: str) -> dict[str, object]:
    """Per step: its own work (STEP_START to its first output) and the Dagster event writes after
    it (the per-partition materializations and check results, up to STEP_SUCCESS); plus the time
    from the run's start to its first step (the per-partition "planned" events)."""
    began: dict[str, float] = {}
    first_output: dict[str, float] = {}
    steps: dict[str, dict[str, float]] = {}
    run_start = first_step = None
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind, key, at = event.event_type_value, event.step_key, entry.timestamp
        if run_start is None:
            run_start = at
        if kind == "STEP_START":
            began[key] = at
            first_step = first_step or at
        elif kind == "STEP_OUTPUT":
            first_output.setdefault(key, at)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and key in began:
            work_end = first_output.get(key, at)
            steps[key] = {"work": work_end - began[key], "events": at - work_end}
    return {"planned_events_s": (first_step or 0) - (run_start or 0), "steps": steps}


def _fetch_seconds(messages: list[tuple[float, str]]) -> float | None:
    """HTTP + parse + staging time: from the "fetching" log line to the "results in" one."""
    start = next((t for t, m in messages if m.startswith("fetching ")), None)
    done = next((t for t, m in messages if " results in " in m), None)
    return None if start is None or done is None else done - start


def _vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _profiler() -> cProfile.Profile | None:
    """With --profile, the run itself (not imports or setup) under cProfile."""
    if not os.environ.get("BENCH_PROFILE"):
        return None
    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def measure(
    emulator: Emulator, org: str, days: int, workdir: Path, extra_env: dict[str, str]
) -> dict[str, object]:
    home = workdir / f"home-{days}d"
    env = pipeline_env(home, emulator.base_url, BENCH_ADMIN_KEY=emulator.orgs[org], **extra_env)
    requests_before, cpu_before = emulator.request_count(), emulator.cpu_seconds()
    run = run_child([PYTHON, __file__, "--child", "--days", str(days), "--org", org], env)
    requests = emulator.request_count() - requests_before
    emulator_cpu = emulator.cpu_seconds() - cpu_before
    if run.returncode != 0:
        raise Failed(f"the {days}-day run process exited {run.returncode}")
    out = last_json_line(run.stdout)
    if not out["success"]:
        raise Failed(f"the {days}-day Dagster run failed")
    start, end = date.fromisoformat(out["start"]), date.fromisoformat(out["end"])
    expected = emulator.expected_total(org, start, end)
    tables = out["tables"]
    for table in TABLES:
        got = Decimal(tables[table]["total"])
        if got != expected:
            raise Failed(f"{table} totals {got} USD, the emulator expects {expected} USD exactly")
    rows = tables["raw_openai_costs"]["rows"]
    if tables["fct_costs"]["rows"] != rows or rows == 0:
        raise Failed(f"raw has {rows} rows, fct_costs {tables['fct_costs']['rows']}")
    run_wall = out["run_wall_s"]
    return {
        "days": days,
        "rows": rows,
        "expected_total_usd": format(expected, "f"),
        "run_wall_s": run_wall,
        "run_cpu_s": out["run_cpu_s"],
        "process_wall_s": run.wall_s,
        "import_s": out["import_s"],
        "setup_s": out["setup_s"],
        "rows_per_s": rows / run_wall,
        "peak_rss_bytes": run.max_rss_bytes,
        "vm_hwm_bytes": out["vm_hwm_bytes"],
        "process_cpu_s": run.cpu_s,
        "http_requests": requests,
        "emulator_cpu_s": emulator_cpu,
        "emulator_cpu_share_of_run": emulator_cpu / run_wall,
        "steps_s": out["steps_s"],
        "fetch_s": out["fetch_s"],
    }


def report(m: dict[str, object]) -> None:
    steps = m["steps_s"]["steps"]
    print(
        f"  {m['days']:>3} days: {m['rows']:,} rows, total {m['expected_total_usd']} USD "
        "(raw = fct = both rollups = emulator, exactly)\n"
        f"      run wall {m['run_wall_s']:.2f} s -> {m['rows_per_s']:,.0f} rows/s; run CPU "
        f"{m['run_cpu_s']:.2f} s (all threads; less sensitive to other load on the machine)\n"
        f"      "
        f"(process {m['process_wall_s']:.2f} s incl. import {m['import_s']:.2f} s, "
        f"setup {m['setup_s']:.2f} s; CPU {m['process_cpu_s']:.2f} s)\n"
        f"      peak RSS {mib(m['peak_rss_bytes'])} (VmHWM {mib(m['vm_hwm_bytes'])}), "
        f"{m['http_requests']} HTTP request(s)\n"
        f"      emulator CPU {m['emulator_cpu_s']:.2f} s = "
        f"{100 * m['emulator_cpu_share_of_run']:.0f}% of one core over the run\n"
        f"      run start -> first step (Dagster 'planned' events) "
        f"{m['steps_s']['planned_events_s']:.2f} s; fetch+parse+stage {m['fetch_s'] or 0:.2f} s\n"
        + "".join(
            f"      {k}: work {v['work']:.2f} s, then Dagster events {v['events']:.2f} s\n"
            for k, v in steps.items()
        ),
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 results a day (< 1 min)")
    parser.add_argument("--results-per-day", type=int, help="override the results a day")
    parser.add_argument("--ranges", default="30,180", help="range lengths in days")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="write a cProfile pstats file of each run (DIR/backfill-<days>d.pstats); "
        "timings are slower under the profiler",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--days", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--org", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.days, args.org)
        return 0
    per_day = args.results_per_day or (1_000 if args.quick else 10_000)
    ranges = [int(d) for d in args.ranges.split(",")]
    (org,) = orgs = org_keys(1, "big")
    today = utc_today()
    profile_dir = Path(args.profile).resolve() if args.profile else None
    print(f"backfill benchmark: 1 integration, {per_day:,} results/day, ranges {ranges} days")
    with Emulator(orgs, per_day, clock=today + timedelta(days=1)) as emulator:
        started = time.perf_counter()
        size = emulator.warm(org, *days_ending(today, max(ranges)))
        print(
            f"  emulator pid {emulator.pid} warmed: {size / 1e6:,.0f} MB for {max(ranges)} days "
            f"in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix="grafient-bench-") as tmp:
            runs = []
            for days in ranges:
                env: dict[str, str] = {}
                if profile_dir is not None:
                    profile_dir.mkdir(parents=True, exist_ok=True)
                    env["BENCH_PROFILE"] = str(profile_dir / f"backfill-{days}d.pstats")
                runs.append(measure(emulator, org, days, Path(tmp), env))
                report(runs[-1])
    small, big = runs[0], runs[-1]
    # "Flat": 6x the days costs under 25% more peak memory. The rest of the growth is DuckDB
    # filling its bounded buffers (warehouse.BULK_WRITE_SETTINGS) while it loads, which a
    # 250,000-row slice (30 days at 10,000 a day) already does and --quick's small slices do not.
    growth = big["peak_rss_bytes"] / small["peak_rss_bytes"]
    flat = growth < 1.25
    fast, lean = big["rows_per_s"] >= TARGET_ROWS_PER_S, big["peak_rss_bytes"] < TARGET_RSS
    print(
        f"\n  {big['days']} vs {small['days']} days: peak RSS x{growth:.2f} "
        f"({'flat' if flat else 'GROWS'} with the range)\n"
        f"  targets: >= {TARGET_ROWS_PER_S:,} rows/s: {'met' if fast else 'NOT met'}; "
        f"peak RSS < 1 GiB: {'met' if lean else 'NOT met'}; "
        f"memory flat: {'met' if flat else 'NOT met'}"
        + (" (--quick: too little data to judge memory; use the full run)" if args.quick else "")
    )
    name = "backfill" + ("_quick" if args.quick else "")
    path = save_result(
        name,
        {"results_per_day": per_day, "runs": runs, "rss_growth": growth},
    )
    print(f"  figures saved to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
