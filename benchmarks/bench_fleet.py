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

    .venv/bin/python benchmarks/bench_fleet.py [--quick] [--integrations N] [--batch K]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    Emulator,
    Failed,
    org_keys,
    pipeline_env,
    proc_cpu_seconds,
    save_result,
)

TARGET_S_PER_INTEGRATION = 0.25  # issue 18: the daily sync of 1,000 integrations
RESULTS_PER_DAY = 300
JOB = "openai_costs_job"
SCHEDULE = "daily_openai_sync"


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
    prepare_home(settings)
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
    }
    for record in records:
        at: dict[str, float] = {}
        for entry in instance.all_logs(record.dagster_run.run_id):
            event = entry.dagster_event
            if event is not None and event.event_type_value not in at:
                at[event.event_type_value] = entry.timestamp
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


def verify(settings, emulator: Emulator, pairs, records) -> None:
    from grafient_pipeline.warehouse import connect

    failed = [r.dagster_run.run_id for r in records if r.dagster_run.status.value != "SUCCESS"]
    if failed:
        raise Failed(f"{len(failed)} run(s) did not succeed, e.g. {failed[0]}")
    tags = records[0].dagster_run.tags
    start = tags["dagster/asset_partition_range_start"].split("|")[0]
    end = tags["dagster/asset_partition_range_end"].split("|")[0]
    with connect(settings.warehouse, read_only=True) as conn:
        totals = dict(
            conn.execute(
                "SELECT integration_id, sum(amount_usd) FROM fct_costs "
                "WHERE cost_date BETWEEN ?::DATE AND ?::DATE GROUP BY 1",
                [start, end],
            ).fetchall()
        )
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    for integration_id, org in pairs:
        expected = emulator.expected_total(org, first, last)
        got = Decimal(totals.get(integration_id, 0))
        if got != expected:
            raise Failed(f"{integration_id}: fct_costs {got} USD, emulator {expected} USD")
    print(f"  verified: {len(pairs)} integrations, {start}..{end}, totals exact", flush=True)


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
    args = parser.parse_args()
    n = args.integrations or (8 if args.quick else 1000)
    orgs = org_keys(n, "fleet")
    from grafient_pipeline.settings import DEFAULT_SYNC_BATCH

    batch = args.batch or (4 if args.quick else DEFAULT_SYNC_BATCH)
    how = f"up to {batch} integrations per run (GRAFIENT_SYNC_BATCH={batch})"
    print(
        f"fleet benchmark: {n} integrations x 3-day window x {RESULTS_PER_DAY} results/day, {how}"
    )
    with (
        Emulator(orgs, RESULTS_PER_DAY) as emulator,
        tempfile.TemporaryDirectory(prefix="grafient-fleet-") as tmp_dir,
    ):
        tmp = args.keep or Path(tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        home = tmp / "home"
        env = pipeline_env(home, emulator.base_url, GRAFIENT_SYNC_BATCH=str(batch))
        workspace = ROOT / "workspace.yaml"
        os.environ.update(env)
        from grafient_pipeline.settings import load_settings

        settings = load_settings()
        tick = last_tick(datetime.now(UTC))
        window_end = tick.date() - timedelta(days=1)
        window_start = window_end - timedelta(days=settings.resync_days - 1)
        started = time.perf_counter()
        pairs = set_up(n, emulator, workspace)
        for org in orgs:
            emulator.warm(org, window_start, window_end)
        print(
            f"  set up {n} integrations, partitions, schedule state (tick {tick:%Y-%m-%d %H:%M} "
            f"UTC) and warmed the emulator in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        import dagster as dg

        requests_before, emulator_cpu = emulator.request_count(), emulator.cpu_seconds()
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
        verify(settings, emulator, pairs, records)
    per = wall / n
    med = {k: statistics.median(v) if v else 0.0 for k, v in phases.items()}
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
        f"  CPU of the daemon tree before it stopped: {sum(daemon_cpu.values()):.0f} s = "
        f"{sum(daemon_cpu.values()) / n:.2f} s per integration ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(daemon_cpu.items()) if v >= 0.5)
        + f"); emulator {emulator_cpu:.1f} s; {requests} HTTP requests",
        flush=True,
    )
    name = "fleet" + ("_quick" if args.quick else "") + (f"_batch{batch}" if args.batch else "")
    path = save_result(
        name,
        {
            "integrations": n,
            "batch": batch,
            "runs": len(records),
            "wall_s": wall,
            "s_per_integration": per,
            "tick_to_done_s": tick_to_done,
            "daemon_to_first_run_s": first_created - wall0,
            "median_phase_s": med,
            "cpu_s": daemon_cpu,
            "http_requests": requests,
            "emulator_cpu_s": emulator_cpu,
        },
    )
    print(f"  figures saved to {path}")
    return 0


def _stop(proc: subprocess.Popen, grace: float = 60.0) -> None:
    """Ctrl-C the daemon (it stops its code server); kill it if it does not exit in time."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a live process tree by role, counting for each live process its own time
    and that of the children it already reaped (a code server reaps its finished run processes).
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(text[text.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
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
