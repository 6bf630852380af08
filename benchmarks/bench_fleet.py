"""Fleet daily sync: N integrations x the 3-day resync window x 300 results a day, through the
production schedule path.

Production path, step by step:
1. A GRAFIENT_HOME with ``prepare_home`` (dagster.yaml: pool "duckdb" limited to 1, at most 4
   concurrent runs), N integrations in the registry (already onboarded: their backfill marked as
   requested, so the onboarding sensor launches nothing) and their dynamic partitions added.
2. The emulator (own process, one warm-up request per organization before timing).
3. The ``daily_openai_sync`` schedule is armed so that its latest 06:00 UTC tick is due: its
   stored state (the one the daemon itself creates for a schedule that is RUNNING by default)
   gets a start time just before that tick.
4. Timing starts: ``dagster-daemon run -w workspace.yaml`` (DAGSTER_HOME set) starts; its
   scheduler evaluates the tick through the code server, creates one run per batch of
   GRAFIENT_SYNC_BATCH integrations (default 20; ``--batch 1``: one run per integration) and
   submits them to the queue; its run coordinator dequeues them (at most 4 at a time) and the
   default run launcher starts each in its own process. Timing stops when every run is finished.
5. Every run must succeed and every integration's fct_costs total over the window must equal the
   emulator's expected total exactly (fails loudly otherwise).

Prints total wall time, time from the tick's first run to the last run's end, amortized time per
integration, and where a run's time goes (launch -> start: process and code load; start -> end:
execution; queue wait) against issue 18's target (<= 0.25 s per integration at 1,000
integrations). ``--quick`` uses 8 integrations, the default 1,000.

``--warehouse ducklake`` (issue 19) runs the same on a DuckLake: a PostgreSQL server of its own
(tests/postgres.py's: initdb into a temporary folder, pg_ctl on a free port, stopped at the end)
with one database for the catalog, the data under GRAFIENT_HOME/lake/, and duckdb 1.5.5 from
``.ducklake-deps/`` (``make ducklake-deps``) first on PYTHONPATH for the daemon and every run it
launches (dagster.yaml's pool "duckdb" then has 4 slots, so the 4 concurrent runs write at once).
The lake's schema is created before timing (a lake is made once); its totals are read by a duckdb
1.5.5 subprocess. Also prints how many slice commits were retried after a DuckLake conflict (the
INFO line of ``warehouse.retry_on_conflict``, captured as a Dagster log) and the catalog server's
CPU. ``--both`` runs the file warehouse, then the lake, each in its own process, and prints them
side by side.

    .venv/bin/python benchmarks/bench_fleet.py [--quick] [--integrations N] [--batch K]
        [--warehouse file|ducklake | --both] [--lake-deps DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    ROOT,
    Emulator,
    Failed,
    load_result,
    org_keys,
    pipeline_env,
    proc_cpu_seconds,
    save_result,
)

TARGET_S_PER_INTEGRATION = 0.25  # issue 18: the daily sync of 1,000 integrations
RESULTS_PER_DAY = 300
JOB = "openai_costs_job"
SCHEDULE = "daily_openai_sync"
LAKE_DEPS = ROOT / ".ducklake-deps"
CONFLICT_LINE = "DuckLake commit conflicted"
# Appended to the generated dagster.yaml: the warehouse's INFO lines (one per commit retried
# after a DuckLake conflict) become the run's Dagster logs, which the benchmark counts.
MANAGED_LOGS = """\
python_logs:
  managed_python_loggers:
    - grafient_pipeline.warehouse
  python_log_level: INFO
"""
# Runs in a duckdb 1.5.5 subprocess (the lake's): argv[1] is "schema" or a query and its params.
LAKE_SCRIPT = """\
import json, sys
from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.settings import load_settings
from grafient_pipeline.warehouse import connect
if sys.argv[1] == "schema":
    with connect(load_settings().warehouse) as conn:
        ensure_schema(conn)
else:
    with connect(load_settings().warehouse, read_only=True) as conn:
        print(json.dumps(conn.execute(sys.argv[1], sys.argv[2:]).fetchall()))
"""
TOTALS_SQL = (
    "SELECT integration_id, sum(amount_usd)::VARCHAR FROM fct_costs "
    "WHERE cost_date BETWEEN ?::DATE AND ?::DATE GROUP BY 1"
)


def last_tick(now: datetime) -> datetime:
    """The latest 06:00 UTC at or before now."""
    tick = now.replace(hour=6, minute=0, second=0, microsecond=0)
    return tick if tick <= now else tick - timedelta(days=1)


def set_up(n: int, emulator: Emulator, workspace: Path) -> list[tuple[str, str]]:
    """Registry, partitions and schedule state; returns [(integration_id, org_id)]."""
    import dagster as dg

    from grafient_pipeline.instance import prepare_home
    from grafient_pipeline.registry import Registry
    from grafient_pipeline.settings import load_settings

    settings = load_settings()
    config = prepare_home(settings) / "dagster.yaml"
    config.write_text(config.read_text() + MANAGED_LOGS)
    registry = Registry.from_settings(settings)
    pairs = []
    for i, (org, key) in enumerate(emulator.orgs.items()):
        integration = registry.add(f"Fleet {i:04d}", "pro", key, organization_id=org)
        registry.mark_backfill_requested(integration.id, 180)  # onboarded long ago
        pairs.append((integration.id, org))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("integrations", [i for i, _ in pairs])
        arm_schedule(instance, workspace, last_tick(datetime.now(UTC)))
    return pairs


def arm_schedule(instance, workspace: Path, tick: datetime) -> None:
    """Store the schedule's state as the daemon would, started just before ``tick``."""
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        ScheduleInstigatorData,
    )
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    target = WorkspaceFileTarget(paths=[str(workspace)])
    with WorkspaceProcessContext(instance, target) as context:
        request = context.create_request_context()
        (location,) = [e.code_location for e in request.get_code_location_entries().values()]
        (repo,) = location.get_repositories().values()
        schedule = repo.get_schedule(SCHEDULE)
        state = InstigatorState(
            schedule.get_remote_origin(),
            InstigatorType.SCHEDULE,
            InstigatorStatus.DECLARED_IN_CODE,
            ScheduleInstigatorData(schedule.cron_schedule, tick.timestamp() - 60),
        )
        instance.add_instigator_state(state)


def wait_for_runs(instance, n: int, daemon: subprocess.Popen, timeout: float) -> list:
    from dagster import DagsterRunStatus, RunsFilter

    done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while time.monotonic() < deadline:
        records = instance.get_run_records(RunsFilter(job_name=JOB))
        finished = [r for r in records if r.dagster_run.status in done]
        if len(records) >= n and len(finished) == len(records):
            return records
        if daemon.poll() is not None:
            raise Failed(f"dagster-daemon exited {daemon.returncode}")
        if time.monotonic() - last_report > 15:
            print(f"    {len(records)} runs created, {len(finished)} finished", flush=True)
            last_report = time.monotonic()
        time.sleep(0.5)
    raise Failed(f"runs not finished within {timeout:.0f} s")


def run_phases(instance, records) -> dict[str, list[float]]:
    """Per run: queued (created -> launched), startup (launched -> the run process starts
    executing: process spawn, imports, code load), execution (start -> end), and within it
    the wait for the duckdb pool's slot (start -> step start) and the step itself."""
    phases: dict[str, list[float]] = {
        "queued": [],
        "startup": [],
        "execution": [],
        "pool_wait": [],
        "step": [],
        "conflicts_retried": [],
    }
    for record in records:
        at: dict[str, float] = {}
        conflicts = 0
        for entry in instance.all_logs(record.dagster_run.run_id):
            event = entry.dagster_event
            if event is None:
                conflicts += CONFLICT_LINE in (entry.user_message or "")
            elif event.event_type_value not in at:
                at[event.event_type_value] = entry.timestamp
        phases["conflicts_retried"].append(float(conflicts))
        created = record.create_timestamp.timestamp()
        launched = at.get("PIPELINE_STARTING")
        started = at.get("PIPELINE_START")
        ended = at.get("PIPELINE_SUCCESS") or at.get("PIPELINE_FAILURE")
        step_start = at.get("STEP_START")
        step_end = at.get("STEP_SUCCESS") or at.get("STEP_FAILURE")
        if launched and started and ended:
            phases["queued"].append(launched - created)
            phases["startup"].append(started - launched)
            phases["execution"].append(ended - started)
        if started and step_start and step_end:
            phases["pool_wait"].append(step_start - started)
            phases["step"].append(step_end - step_start)
    return phases


def verify(settings, emulator: Emulator, pairs, records, env: dict[str, str]) -> None:
    failed = [r.dagster_run.run_id for r in records if r.dagster_run.status.value != "SUCCESS"]
    if failed:
        raise Failed(f"{len(failed)} run(s) did not succeed, e.g. {failed[0]}")
    tags = records[0].dagster_run.tags
    start = tags["dagster/asset_partition_range_start"].split("|")[0]
    end = tags["dagster/asset_partition_range_end"].split("|")[0]
    if settings.warehouse.startswith("ducklake:"):
        rows = json.loads(lake_python(env, TOTALS_SQL, start, end))
    else:
        from grafient_pipeline.warehouse import connect

        with connect(settings.warehouse, read_only=True) as conn:
            rows = conn.execute(TOTALS_SQL, [start, end]).fetchall()
    totals = {integration_id: Decimal(total) for integration_id, total in rows}
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    for integration_id, org in pairs:
        expected = emulator.expected_total(org, first, last)
        got = totals.get(integration_id, Decimal(0))
        if got != expected:
            raise Failed(f"{integration_id}: fct_costs {got} USD, emulator {expected} USD")
    print(f"  verified: {len(pairs)} integrations, {start}..{end}, totals exact", flush=True)


def lake_python(env: dict[str, str], *args: str) -> str:
    """LAKE_SCRIPT in a subprocess of the lake's environment (duckdb 1.5.5); its stdout."""
    result = subprocess.run(
        [PYTHON, "-c", LAKE_SCRIPT, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise Failed(f"the lake's subprocess failed:\n{result.stderr[-3000:]}")
    return result.stdout


@contextmanager
def lake_catalog() -> Iterator[tuple[str, int]]:
    """A PostgreSQL server of this benchmark's own (tests/postgres.py starts it) and one empty
    database for the catalog: its postgresql:// URL and the server's pid; stopped at the end."""
    sys.path.insert(0, str(ROOT))
    from tests.postgres import INSTALL_HINT, SERVER_USER, PostgresServer, find_bindir, free_port

    bindir = find_bindir()
    if bindir is None:
        raise Failed(f"PostgreSQL's server binaries are missing ({INSTALL_HINT})")
    folder = Path(tempfile.mkdtemp(prefix="grafient-fleet-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses root: its user owns the folder
        shutil.chown(folder, SERVER_USER, SERVER_USER)
    server = PostgresServer(bindir, folder, free_port())
    try:
        server.start()
        url = server.create_database().replace("postgresql+psycopg2://", "postgresql://", 1)
        postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
        yield url, postmaster
    finally:
        if (server.data / "postmaster.pid").exists():
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def lake_settings(url: str, home: Path, deps: Path) -> dict[str, str]:
    """The lake's environment variables: catalog, data path, duckdb 1.5.5 first on PYTHONPATH."""
    if not (deps / ".installed-1.5.5").is_file():
        raise Failed(f"no duckdb 1.5.5 with the DuckLake extensions in {deps}: make ducklake-deps")
    path = [str(deps), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {
        "GRAFIENT_WAREHOUSE": "ducklake:" + url,
        "GRAFIENT_WAREHOUSE_DATA_PATH": str(home / "lake") + "/",
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 integrations (< 1 min)")
    parser.add_argument("--integrations", type=int, help="override the number of integrations")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (to inspect)")
    parser.add_argument(
        "--batch",
        type=int,
        help="integrations per run (GRAFIENT_SYNC_BATCH; default: the product's default, "
        "--quick: 4; 1 = one run per integration)",
    )
    parser.add_argument("--warehouse", choices=("file", "ducklake"), default="file")
    parser.add_argument("--both", action="store_true", help="file, then ducklake, side by side")
    parser.add_argument(
        "--lake-deps",
        type=Path,
        default=LAKE_DEPS,
        help="folder with duckdb 1.5.5 and the DuckLake extensions (make ducklake-deps)",
    )
    parser.add_argument("--result-name-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.both:
        return run_both(args)
    n = args.integrations or (8 if args.quick else 1000)
    from grafient_pipeline.settings import DEFAULT_SYNC_BATCH

    batch = args.batch or (4 if args.quick else DEFAULT_SYNC_BATCH)
    lake = args.warehouse == "ducklake"
    how = f"up to {batch} integrations per run (GRAFIENT_SYNC_BATCH={batch})"
    where = "a DuckLake (PostgreSQL catalog)" if lake else "the DuckDB file"
    print(
        f"fleet benchmark on {where}: {n} integrations x 3-day window x {RESULTS_PER_DAY} "
        f"results/day, {how}"
    )
    with (
        Emulator(org_keys(n, "fleet"), RESULTS_PER_DAY) as emulator,
        tempfile.TemporaryDirectory(
            prefix="grafient-fleet-", ignore_cleanup_errors=True
        ) as tmp_dir,
        lake_catalog() if lake else _no_catalog() as (catalog_url, postmaster),
    ):
        tmp = args.keep or Path(tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        home = tmp / "home"
        extra = {"GRAFIENT_SYNC_BATCH": str(batch)}
        if lake:
            extra.update(lake_settings(catalog_url, home, args.lake_deps))
        env = pipeline_env(home, emulator.base_url, **extra)
        figures = measure(args, n, batch, emulator, env, tmp, postmaster)
        name = "fleet" + ("_lake" if lake else "") + ("_quick" if args.quick else "")
        name += f"_batch{batch}" if args.batch else ""
        if args.integrations:
            name += f"_n{n}"
        path = save_result(name, {"warehouse": args.warehouse, **figures})
        print(f"  figures saved to {path}")
    if args.result_name_file:
        args.result_name_file.write_text(name)
    return 0


@contextmanager
def _no_catalog() -> Iterator[tuple[str, int]]:
    yield "", 0


def measure(
    args, n: int, batch: int, emulator: Emulator, env: dict[str, str], tmp: Path, postmaster: int
) -> dict:
    workspace = ROOT / "workspace.yaml"
    os.environ.update(env)  # the code server arm_schedule starts inherits it
    from grafient_pipeline.settings import load_settings

    settings = load_settings()
    lake = settings.warehouse.startswith("ducklake:")
    tick = last_tick(datetime.now(UTC))
    window_end = tick.date() - timedelta(days=1)
    window_start = window_end - timedelta(days=settings.resync_days - 1)
    started = time.perf_counter()
    pairs = set_up(n, emulator, workspace)
    if lake:
        lake_python(env, "schema")
    for org in emulator.orgs:
        emulator.warm(org, window_start, window_end)
    print(
        f"  set up {n} integrations, partitions, schedule state (tick {tick:%Y-%m-%d %H:%M} "
        f"UTC){', the lake' if lake else ''} and warmed the emulator in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    import dagster as dg

    requests_before, emulator_cpu = emulator.request_count(), emulator.cpu_seconds()
    catalog_cpu = _catalog_cpu(postmaster)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    wall0 = time.time()
    daemon_log = (tmp / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=daemon_log,
        start_new_session=True,
    )
    try:
        with dg.DagsterInstance.get() as instance:
            expected_runs = -(-n // batch)
            records = wait_for_runs(instance, expected_runs, daemon, args.timeout)
            wall = time.perf_counter() - t0
            load_after = os.getloadavg()
            catalog_cpu = _catalog_cpu(postmaster) - catalog_cpu
            ends = [r.end_time for r in records if r.end_time]
            first_created = min(r.create_timestamp.timestamp() for r in records)
            tick_to_done = max(ends) - first_created
            phases = run_phases(instance, records)
            daemon_cpu = _tree_cpu(daemon.pid)
    finally:
        _stop(daemon)
        daemon_log.close()
    requests = emulator.request_count() - requests_before
    emulator_cpu = emulator.cpu_seconds() - emulator_cpu
    verify(settings, emulator, pairs, records, env)
    per = wall / n
    conflicts = int(sum(phases.pop("conflicts_retried")))
    med = {k: statistics.median(v) if v else 0.0 for k, v in phases.items()}
    cpu_total = sum(daemon_cpu.values())
    print(
        f"  daemon start -> all {len(records)} runs ({n} integrations) done: {wall:.1f} s = "
        f"{per:.2f} s per integration "
        f"(target <= {TARGET_S_PER_INTEGRATION:.2f} s: "
        f"{'met' if per <= TARGET_S_PER_INTEGRATION else 'NOT met'})\n"
        f"  first run created -> last run done: {tick_to_done:.1f} s = "
        f"{tick_to_done / n:.2f} s per integration; daemon up to first run: "
        f"{first_created - wall0:.1f} s\n"
        f"  per run (median): queued {med['queued']:.1f} s, launch -> start (process, imports, "
        f"code load) {med['startup']:.2f} s, execution {med['execution']:.2f} s (waiting for the "
        f"duckdb pool {med['pool_wait']:.2f} s, the step {med['step']:.2f} s)\n"
        + (f"  slice commits retried after a DuckLake conflict: {conflicts}\n" if lake else "")
        + f"  CPU of the daemon tree before it stopped: {cpu_total:.0f} s = "
        f"{cpu_total / n:.2f} s per integration ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(daemon_cpu.items()) if v >= 0.5)
        + f"); emulator {emulator_cpu:.1f} s; "
        + (f"catalog (PostgreSQL) {catalog_cpu:.1f} s; " if lake else "")
        + f"{requests} HTTP requests\n"
        f"  machine load (1-min average, {os.cpu_count()} CPUs): {load_before[0]:.1f} at the "
        f"start, {load_after[0]:.1f} at the end",
        flush=True,
    )
    return {
        "integrations": n,
        "batch": batch,
        "runs": len(records),
        "wall_s": wall,
        "s_per_integration": per,
        "tick_to_done_s": tick_to_done,
        "daemon_to_first_run_s": first_created - wall0,
        "median_phase_s": med,
        "conflicts_retried": conflicts,
        "cpu_s": daemon_cpu,
        "cpu_total_s": cpu_total,
        "catalog_cpu_s": catalog_cpu if lake else None,
        "http_requests": requests,
        "emulator_cpu_s": emulator_cpu,
        "load_avg_1min": [load_before[0], load_after[0]],
    }


def _catalog_cpu(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL server (its live processes and those it reaped); 0 without."""
    return sum(_tree_cpu(postmaster).values()) if postmaster else 0.0


def run_both(args) -> int:
    """The file warehouse, then the lake, each in a process of its own; then side by side."""
    forwarded = [a for a in sys.argv[1:] if a != "--both"]
    results = {}
    for warehouse in ("file", "ducklake"):
        with tempfile.NamedTemporaryFile("r", suffix=".name") as name_file:
            argv = [PYTHON, __file__, *forwarded, "--warehouse", warehouse]
            argv += ["--result-name-file", name_file.name]
            if subprocess.run(argv, cwd=ROOT).returncode != 0:
                raise Failed(f"the {warehouse} run failed")
            results[warehouse] = load_result(Path(name_file.name).read_text().strip())
    print_side_by_side(results["file"], results["ducklake"])
    return 0


def print_side_by_side(file: dict, lake: dict) -> None:
    rows = [
        ("wall, daemon start -> all runs done (s)", lambda r: f"{r['wall_s']:.1f}"),
        ("per integration (s)", lambda r: f"{r['s_per_integration']:.3f}"),
        ("first run created -> last done (s)", lambda r: f"{r['tick_to_done_s']:.1f}"),
        ("run execution, median (s)", lambda r: f"{r['median_phase_s']['execution']:.1f}"),
        ("  waiting for the duckdb pool (s)", lambda r: f"{r['median_phase_s']['pool_wait']:.1f}"),
        ("  the step (s)", lambda r: f"{r['median_phase_s']['step']:.1f}"),
        ("commits retried on a conflict", lambda r: str(r["conflicts_retried"])),
        ("CPU, daemon tree (s)", lambda r: f"{r['cpu_total_s']:.0f}"),
        (
            "CPU, catalog PostgreSQL (s)",
            lambda r: f"{r['catalog_cpu_s']:.0f}" if r["catalog_cpu_s"] is not None else "-",
        ),
        ("load average at start / end", lambda r: "{:.1f} / {:.1f}".format(*r["load_avg_1min"])),
    ]
    print(
        f"\nside by side: {file['integrations']} integrations, {file['runs']} runs of up to "
        f"{file['batch']}, at most 4 at once"
    )
    print(f"  {'':42} {'DuckDB file':>14} {'DuckLake':>14}")
    for label, cell in rows:
        print(f"  {label:42} {cell(file):>14} {cell(lake):>14}")


def _stop(proc: subprocess.Popen, grace: float = 60.0) -> None:
    """Ctrl-C the daemon (it stops its code server); kill it if it does not exit in time. Then
    wait for the rest of its session (a code server finishing its calls still writes to
    GRAFIENT_HOME, which would race the removal of the temporary folder)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + grace
    while _session_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command name) of every process."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            yield int(entry.name), text[text.rindex(")") + 2 :].split()


def _session_alive(sid: int) -> bool:
    """Whether a live (not zombie) process remains in the session ``sid``."""
    return any(fields[0] != "Z" and int(fields[3]) == sid for _, fields in _proc_stats())


def _tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a live process tree by role, counting for each live process its own time
    and that of the children it already reaped (a code server reaps its finished run processes).
    """
    children: dict[int, list[int]] = {}
    for child, fields in _proc_stats():
        children.setdefault(int(fields[1]), []).append(child)
    roles: dict[str, float] = {}
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            command = Path(f"/proc/{current}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            own = proc_cpu_seconds(current)
            reaped = proc_cpu_seconds(current, reaped_children=True) - own
        except OSError:
            continue
        role = (
            "run processes"
            if "execute_run" in command or "api execute" in command
            else "code server"
            if "api grpc" in command
            else "daemon"
        )
        roles[role] = roles.get(role, 0.0) + own
        if role == "code server":
            roles["run processes"] = roles.get("run processes", 0.0) + reaped
        else:
            roles[f"{role} (reaped children)"] = (
                roles.get(f"{role} (reaped children)", 0.0) + reaped
            )
        stack.extend(children.get(current, []))
    return roles


if __name__ == "__main__":
    sys.exit(main())
