"""Issue 9, crash safety: a sync process killed with SIGKILL in the middle of a warehouse write.

The child is the real `grafient sync` (CLI -> in-process Dagster run -> assets -> DuckDB) with
one test-only hook: its DuckDB connections are wrapped so that, inside the transaction that
rewrites the chosen table's slice (after the DELETE and INSERT ran, before COMMIT), the child
writes a marker file and stops. The test waits for the marker, kills the child with SIGKILL and
checks what a later reader and a later run see.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from grafient_pipeline.providers.openai.emulator import CostsEmulator
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings
from tests.conftest import ADMIN_KEY, ORG_ID, last_days, run_range
from tests.test_idempotency import (
    COST_TABLES,
    assert_exact,
    failure_message,
    snapshot,
)

DATES = last_days(4)
CHILD = r"""
import os, re, sys, time
from pathlib import Path

import duckdb

marker = Path(os.environ["CRASH_MARKER"])
table = os.environ["CRASH_TABLE"]
writes = re.compile(rf"\b(DELETE\s+FROM|INSERT\s+INTO|UPDATE|COPY)\s+{table}\b", re.I)
real_connect = duckdb.connect


class Connection:
    '''A DuckDB connection that stops forever at the COMMIT of a write to `table`.'''

    def __init__(self, conn):
        self._conn = conn
        self._dirty = False

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._conn.__exit__(*exc)

    def _stop_here(self):
        marker.write_text(str(os.getpid()))
        while True:
            time.sleep(60)

    def execute(self, query, *args, **kwargs):
        text = query if isinstance(query, str) else ""
        if self._dirty and text.strip().upper().startswith(("COMMIT", "END")):
            self._stop_here()
        result = self._conn.execute(query, *args, **kwargs)
        if writes.search(text):
            self._dirty = True
        return result

    def commit(self):
        if self._dirty:
            self._stop_here()
        return self._conn.commit()


duckdb.connect = lambda *a, **k: Connection(real_connect(*a, **k))
from grafient_pipeline.cli import main

sys.exit(main(sys.argv[1:]))
"""


def sync_args(integration_id: str) -> list[str]:
    return ["sync", integration_id, "--start", DATES.start.isoformat(),
            "--end", DATES.end.isoformat()]  # fmt: skip


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(settings.dagster_home), **extra}


def kill_mid_write(settings: Settings, integration_id: str, table: str, tmp: Path) -> None:
    """Run `grafient sync` until it is inside the write of ``table``, then SIGKILL it."""
    marker = tmp / f"in-{table}-write"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *sync_args(integration_id)],
        env=cli_env(settings, CRASH_MARKER=str(marker), CRASH_TABLE=table),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if child.poll() is not None:
                _out, err = child.communicate()
                pytest.fail(f"the sync ended before writing {table} (hook never fired): {err}")
            assert time.monotonic() < deadline, "the child never reached the write"
            time.sleep(0.02)
        assert marker.read_text() == str(child.pid)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("table", ["raw_openai_costs", "fct_costs"])
def test_sigkill_mid_write_keeps_previous_data_and_the_next_run_completes(
    settings: Settings,
    registry: Registry,
    instance: dg.DagsterInstance,
    emulator: CostsEmulator,
    tmp_path: Path,
    table: str,
):
    integration = registry.add("Crashy Org", "pro", ADMIN_KEY, organization_id=ORG_ID)
    assert run_range(settings, instance, integration.id, DATES).success
    before = snapshot(settings, volatile=True)
    for day in DATES.dates():  # the API moves on: the crashed run was writing other numbers
        emulator.restate_day(ORG_ID, day, Decimal("1.25"))

    kill_mid_write(settings, integration.id, table, tmp_path)

    after = snapshot(settings, volatile=True)  # DuckDB opens the file and replays its WAL
    for name in COST_TABLES:  # one transaction for all four tables: every one as before
        assert after[name] == before[name], name

    result = run_range(settings, instance, integration.id, DATES)

    assert result.success, failure_message(result)
    assert_exact(settings, emulator, integration.id, ORG_ID, DATES.start, DATES.end)


def test_cli_sync_after_a_killed_sync_completes(
    settings: Settings, registry: Registry, emulator: CostsEmulator, tmp_path: Path
):
    integration = registry.add("Crashy Org", "pro", ADMIN_KEY, organization_id=ORG_ID)
    kill_mid_write(settings, integration.id, "raw_openai_costs", tmp_path)

    rerun = subprocess.Popen(
        [sys.executable, "-m", "grafient_pipeline.cli", *sync_args(integration.id)],
        env=cli_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stuck_since = None
        deadline = time.monotonic() + 120
        while rerun.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            if waiting_on_a_dead_run(settings):
                stuck_since = stuck_since or time.monotonic()
                if time.monotonic() - stuck_since > 4:
                    break
            else:
                stuck_since = None
    finally:
        if rerun.poll() is None:
            rerun.send_signal(signal.SIGKILL)
        out, err = rerun.communicate()
    assert rerun.returncode == 0, (
        "the next sync did not finish: it waited for the duckdb pool slot still held by the "
        f"killed run (stdout {out!r}, stderr {err!r})"
    )
    assert_exact(settings, emulator, integration.id, ORG_ID, DATES.start, DATES.end)
    assert list(settings.staging_dir.iterdir()) == []  # the killed run's staging file too


def waiting_on_a_dead_run(settings: Settings) -> bool:
    """True when a run's step waits for the duckdb pool slot that another run, one that is
    not running any more (the killed one: still STARTED in the run storage), holds."""
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        info = instance.event_log_storage.get_concurrency_info("duckdb")
        holders = {slot.run_id for slot in info.claimed_slots}
        waiting = {step.run_id for step in info.pending_steps if step.assigned_timestamp is None}
        return bool(holders) and bool(waiting - holders)
