"""End-to-end fixtures: one real `dagster dev` (webserver + daemon) over the emulator, shared by
every e2e test of the session, and one integration onboarded through the CLI and the sensor.

Everything runs on 127.0.0.1 with a temporary GRAFIENT_HOME. Every process started here is in
its own session and is stopped (and checked gone) when the session ends.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from grafient_pipeline.instance import dagster_environment, prepare_home
from grafient_pipeline.plans import DateRange
from grafient_pipeline.providers.openai.emulator import CostsEmulator
from grafient_pipeline.settings import Settings, load_settings
from grafient_pipeline.warehouse import connect
from tests.conftest import ADMIN_KEY, MASTER_KEY, ORG_ID, run_cli

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCATION = "grafient_pipeline"
REPOSITORY = "__repository__"  # the repository name Dagster gives a Definitions object
JOB = "openai_costs_job"
ASSETS = ("openai_cost_buckets", "fct_costs", "rollup_model_daily", "rollup_token_type_daily")
LABEL = "E2E Org"
SEED = 7
RESULTS_PER_DAY = 12

STARTUP_SECONDS = 150  # webserver answering and the code location loaded
ONBOARDING_SECONDS = 180  # sensor tick (every 30 s) + queued run + the run itself
BACKFILL_SECONDS = 180  # backfill daemon iterations (every 30 s) + the run
STOP_SECONDS = 30

# raw_openai_costs keeps the API's bucket times and amounts as sent (UTC day = bucket start).
RAW_COLUMNS = ("bucket_start::DATE", "amount_value")
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # dagster dev colours its log lines

RUNS_QUERY = """
query E2ERuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status jobName tags { key value } } }
    ... on InvalidPipelineRunsFilterError { message }
    ... on PythonError { message }
  }
}"""

WORKSPACE_QUERY = """
query E2EWorkspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
    ... on PythonError { message }
  }
}"""

SENSOR_QUERY = """
query E2ESensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      sensorState {
        status
        ticks(limit: 5) { status timestamp skipReason runIds error { message } }
      }
    }
    ... on PythonError { message }
  }
}"""

RUN_LOGS_QUERY = """
query E2ERunLogs($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level }
        ... on ErrorEvent { error { message } }
      }
    }
  }
}"""


class E2EError(AssertionError):
    """An end-to-end expectation that did not hold (the message carries diagnostics)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    what: str,
    probe: Callable[[], Any],
    timeout: float,
    diagnostics: Callable[[], str],
    interval: float = 2.0,
) -> Any:
    """Poll `probe` until it returns something truthy; fail with diagnostics after `timeout`."""
    started = time.monotonic()
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() - started > timeout:
            raise E2EError(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnostics()}")
        time.sleep(interval)


# --------------------------------------------------------------------------- processes


def _session_members(sid: int) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose session or process group is `sid`: (pid, command)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        state, pgrp, session = fields[0], int(fields[2]), int(fields[3])
        if state != "Z" and sid in (pgrp, session):
            members.append((int(entry.name), cmdline[:160]))
    return members


def stop_process_group(process: subprocess.Popen, grace: float = STOP_SECONDS) -> list[str]:
    """Stop a process started with start_new_session=True and everything it started.

    SIGINT first (dagster dev shuts its webserver and daemon down cleanly), then SIGTERM and
    SIGKILL to the whole process group. Returns the processes that were still alive at the end
    (empty when all is gone).
    """
    pgid = process.pid
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if not _session_members(pgid):
            break
        with suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while _session_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    return [f"{pid} {cmd}" for pid, cmd in _session_members(pgid)]


@contextmanager
def default_interrupt_signals() -> Iterator[None]:
    """Children inherit an ignored SIGINT/SIGTERM (e.g. pytest started in the background by a
    shell): `dagster dev` would then ignore the SIGINT that shuts it down cleanly. Restore the
    default dispositions while starting a child, then put back what we had."""
    ignored = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is signal.SIG_IGN]
    for sig in ignored:
        signal.signal(sig, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig in ignored:
            signal.signal(sig, signal.SIG_IGN)


def grafient_cli(
    env: dict[str, str], *args: str, stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, stdin=stdin, env=env, timeout=timeout, cwd=str(PROJECT_ROOT))


# --------------------------------------------------------------------------- the stack


@dataclass
class DagsterStack:
    """A running `dagster dev` (webserver + daemon) over a running emulator."""

    url: str
    env: dict[str, str]
    settings: Settings
    emulator: CostsEmulator
    process: subprocess.Popen
    log_path: Path
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.client.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise E2EError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def runs(self, tags: dict[str, str] | None = None, job: str = JOB) -> list[dict[str, Any]]:
        run_filter: dict[str, Any] = {"pipelineName": job}
        if tags:
            run_filter["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        result = self.graphql(RUNS_QUERY, {"filter": run_filter})["runsOrError"]
        if result["__typename"] != "Runs":
            raise E2EError(f"runsOrError: {result}")
        return result["results"]

    def run_errors(self, run_id: str) -> list[str]:
        logs = self.graphql(RUN_LOGS_QUERY, {"runId": run_id})["logsForRun"]
        messages = []
        for event in logs.get("events", []):
            error = (event.get("error") or {}).get("message")
            if error or event.get("level") == "ERROR":
                messages.append((error or event.get("message") or "").strip()[:800])
        return messages

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(ANSI_ESCAPE.sub("", line) for line in text.splitlines()[-lines:])

    def diagnostics(self) -> str:
        """What to look at when a wait times out: process state, runs, sensor ticks, logs."""
        parts = [f"dagster dev pid {self.process.pid}: exit code {self.process.poll()}"]
        try:
            for run in self.runs():
                tags = {t["key"]: t["value"] for t in run["tags"] if not t["key"].startswith(".")}
                parts.append(f"run {run['runId']} {run['status']} tags={tags}")
                if run["status"] == "FAILURE":
                    parts.extend(f"    {m}" for m in self.run_errors(run["runId"])[:5])
            selector = {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "sensorName": "integrations_sensor",
            }
            parts.append(f"sensor: {self.graphql(SENSOR_QUERY, {'selector': selector})}")
        except Exception as error:  # diagnostics must never hide the original failure
            parts.append(f"(GraphQL diagnostics failed: {type(error).__name__}: {error})")
        parts.append(f"--- last lines of {self.log_path} (webserver + daemon) ---")
        parts.append(self.log_tail())
        return "\n".join(parts)

    def warehouse_totals(self, table: str, integration_id: str) -> dict[date, Decimal]:
        """Per cost_date totals of one table, read-only (call it only when no run is writing)."""
        day, amount = RAW_COLUMNS if table == "raw_openai_costs" else ("cost_date", "amount_usd")
        with connect(self.settings.warehouse, read_only=True) as conn:
            rows = conn.execute(
                f"SELECT {day} AS day, sum({amount}) FROM {table} "
                "WHERE integration_id = ? GROUP BY day",
                [integration_id],
            ).fetchall()
        return {day: Decimal(total) for day, total in rows}


def _code_location_loaded(stack: DagsterStack) -> bool:
    if stack.process.poll() is not None:
        raise E2EError(
            f"dagster dev exited early (code {stack.process.returncode})\n{stack.log_tail()}"
        )
    try:
        stack.client.get(f"{stack.url}/server_info", timeout=2).raise_for_status()
        workspace = stack.graphql(WORKSPACE_QUERY)["workspaceOrError"]
    except (httpx.HTTPError, E2EError):
        return False
    for entry in workspace.get("locationEntries", []):
        loaded = entry.get("locationOrLoadError") or {}
        if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
            if loaded.get("__typename") == "PythonError":
                raise E2EError(f"code location failed to load: {loaded.get('message')}")
            return True
    return False


@pytest.fixture(scope="session")
def dagster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterStack]:
    """`dagster dev` over an in-process emulator whose clock is frozen at the session start
    (so today's partial bucket, and thus the expected totals, do not move during the tests)."""
    root = tmp_path_factory.mktemp("e2e")
    frozen_now = datetime.now(UTC).replace(microsecond=0)
    emulator = CostsEmulator(
        {ORG_ID: ADMIN_KEY}, seed=SEED, results_per_day=RESULTS_PER_DAY, now=lambda: frozen_now
    )
    with emulator:
        yield from _run_dagster_dev(root, emulator)


def _run_dagster_dev(root: Path, emulator: CostsEmulator) -> Iterator[DagsterStack]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    base_env = {
        **os.environ,
        "GRAFIENT_HOME": str(root / "home"),
        "GRAFIENT_OPENAI_BASE_URL": emulator.base_url,
        "GRAFIENT_MASTER_KEY": MASTER_KEY,
        "GRAFIENT_DAGSTER_URL": url,
    }
    base_env.pop("GRAFIENT_WAREHOUSE", None)
    settings = load_settings(base_env)
    prepare_home(settings)
    env = dagster_environment(settings)  # DAGSTER_HOME, GRAFIENT_HOME, warehouse
    keep = ("GRAFIENT_MASTER_KEY", "GRAFIENT_DAGSTER_URL", "GRAFIENT_OPENAI_BASE_URL")
    env.update({k: base_env[k] for k in keep})
    env["PYTHONUNBUFFERED"] = "1"
    log_path = root / "dagster-dev.log"
    listen = ["-h", "127.0.0.1", "-p", str(port)]
    process = None
    stack = None
    try:
        with log_path.open("wb") as log, default_interrupt_signals():
            process = subprocess.Popen(
                [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", *listen],
                env=env,
                cwd=PROJECT_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack = DagsterStack(url, env, settings, emulator, process, log_path)
        started = time.monotonic()
        wait_for(
            "the webserver and the code location",
            lambda: _code_location_loaded(stack),
            STARTUP_SECONDS,
            stack.diagnostics,
            interval=1.0,
        )
        print(f"\n[e2e] dagster dev up at {url} in {time.monotonic() - started:.1f} s")
        yield stack
    finally:
        leftovers = stop_process_group(process) if process is not None else []
        if stack is not None:
            stack.client.close()
        if leftovers:
            raise E2EError(
                "processes still running after stopping dagster dev: " + "; ".join(leftovers)
            )


# --------------------------------------------------------------------------- onboarding


@dataclass(frozen=True)
class Onboarded:
    integration_id: str
    run_id: str
    dates: DateRange  # the onboarding run's date range (its range tags)


def run_range(run: dict[str, Any]) -> tuple[str, DateRange]:
    """(integration, dates) of a range run, from its dagster/asset_partition_range_* tags."""
    tags = {t["key"]: t["value"] for t in run["tags"]}
    start_day, integration = tags["dagster/asset_partition_range_start"].split("|")
    end_day, end_integration = tags["dagster/asset_partition_range_end"].split("|")
    assert end_integration == integration, tags
    return integration, DateRange(date.fromisoformat(start_day), date.fromisoformat(end_day))


@pytest.fixture(scope="session")
def onboarded(dagster_stack: DagsterStack) -> Onboarded:
    """Add an integration with the real CLI, then wait (through GraphQL) for the onboarding
    backfill run that the daemon's `integrations_sensor` launches to succeed."""
    stack = dagster_stack
    added = grafient_cli(
        stack.env,
        "integrations", "add", "--label", LABEL, "--plan", "free", "--key-stdin",
        stdin=ADMIN_KEY + "\n",
    )  # fmt: skip
    assert added.returncode == 0, f"integrations add failed: {added.stderr}"
    assert ADMIN_KEY not in added.stdout + added.stderr
    integration_id = added.stdout.strip().splitlines()[-1]
    started = time.monotonic()

    def finished_run() -> dict[str, Any] | None:
        if stack.process.poll() is not None:
            raise E2EError(f"dagster dev exited (code {stack.process.returncode})")
        runs = [
            r
            for r in stack.runs({"grafient/reason": "onboarding"})
            if run_range(r)[0] == integration_id
        ]
        done = [r for r in runs if r["status"] in TERMINAL_RUN_STATUSES]
        return done[0] if done else None

    run = wait_for(
        f"the sensor's onboarding run of {integration_id} to finish",
        finished_run,
        ONBOARDING_SECONDS,
        stack.diagnostics,
    )
    if run["status"] != "SUCCESS":
        raise E2EError(
            f"onboarding run {run['runId']} ended {run['status']}\n{stack.diagnostics()}"
        )
    elapsed = time.monotonic() - started
    print(f"\n[e2e] onboarding run {run['runId']} succeeded {elapsed:.1f} s after the add")
    _, dates = run_range(run)
    return Onboarded(integration_id, run["runId"], dates)
