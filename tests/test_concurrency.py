"""Issue 9, concurrency: four `grafient sync` processes for four integrations write the same
DuckDB file at once while a reader runs `grafient sql` in a loop. No row is lost or doubled, no
process dies on a lock error, and the reader either answers or says, in one line, that the
warehouse stayed locked (within its bound) -- never a traceback.
"""

from __future__ import annotations

import base64
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from grafient_pipeline import cli, warehouse
from grafient_pipeline.instance import get_instance
from grafient_pipeline.providers.openai.emulator import CostsEmulator
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings, load_settings
from tests.conftest import last_days
from tests.test_idempotency import assert_exact, duplicates

ORGS = {f"org-parallel-{n}": f"sk-admin-parallel-{n}-" + "k3Y9" * 8 for n in range(4)}
DATES = last_days(3)
READ_BOUND_S = 75  # connect() waits up to 60 s for the write lock, plus start-up
LOCK_HOLDER = (
    "import sys, time, duckdb\n"
    "conn = duckdb.connect(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
)


@pytest.fixture
def parallel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with CostsEmulator(ORGS, seed=31, results_per_day=20) as emulator:
        monkeypatch.setenv("GRAFIENT_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("GRAFIENT_OPENAI_BASE_URL", emulator.base_url)
        monkeypatch.setenv("GRAFIENT_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
        monkeypatch.delenv("GRAFIENT_WAREHOUSE", raising=False)
        monkeypatch.setenv("GRAFIENT_DAGSTER_URL", "http://127.0.0.1:9")
        settings = load_settings()
        monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))
        yield emulator, settings


def grafient(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "grafient_pipeline.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def hold_write_lock(settings: Settings, seconds: float) -> subprocess.Popen[str]:
    Path(settings.warehouse).parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, settings.warehouse, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def assert_reader_is_well_behaved(code: int, err: str, elapsed: float) -> None:
    assert "Traceback" not in err, err
    assert elapsed < READ_BOUND_S
    if code != 0:
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1, err
        assert "locked" in lines[0] and "retry" in lines[0], lines[0]


def test_four_syncs_at_once_with_a_reader_lose_nothing(parallel):
    emulator, settings = parallel
    registry = Registry.from_settings(settings)
    ids = {}
    for n, (org, key) in enumerate(ORGS.items()):
        ids[org] = registry.add(f"Parallel {n}", "pro", key, organization_id=org).id
    get_instance(settings).add_dynamic_partitions("integrations", list(ids.values()))

    span = ["--start", DATES.start.isoformat(), "--end", DATES.end.isoformat()]
    syncs = {org: grafient("sync", integration_id, *span) for org, integration_id in ids.items()}
    reads: list[tuple[int, str, str, float]] = []
    query = "SELECT integration_id, count(*) AS n, sum(amount_usd) AS usd FROM fct_costs GROUP BY 1"
    deadline = time.monotonic() + 300
    while any(p.poll() is None for p in syncs.values()) and time.monotonic() < deadline:
        started = time.monotonic()
        reader = subprocess.run(
            [sys.executable, "-m", "grafient_pipeline.cli", "sql", query, "--csv"],
            capture_output=True, text=True, env=dict(os.environ), timeout=READ_BOUND_S + 30,
        )  # fmt: skip
        reads.append((reader.returncode, reader.stdout, reader.stderr, time.monotonic() - started))
        time.sleep(0.5)
    outcomes = {org: (p.wait(timeout=60), *p.communicate()) for org, p in syncs.items()}

    for org, (code, out, err) in outcomes.items():
        assert code == 0, (org, err)
        assert "Traceback" not in err and "rows" in out, (org, out, err)
    assert reads, "the reader never ran while the syncs did"
    for code, out, err, elapsed in reads:
        assert_reader_is_well_behaved(code, err, elapsed)
        if code == 0:
            assert out.startswith("integration_id,n,usd")
    for org, integration_id in ids.items():
        assert_exact(settings, emulator, integration_id, org, DATES.start, DATES.end)
    assert duplicates(settings, "raw_openai_costs") == 0
    assert duplicates(settings, "fct_costs") == 0
    runs = get_instance(settings).get_runs()
    assert len(runs) == 4 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)


def test_reader_waits_for_a_writer_then_answers(parallel):
    _, settings = parallel
    holder = hold_write_lock(settings, 2.0)
    try:
        started = time.monotonic()
        reader = grafient("sql", "SELECT 40 + 2 AS answer", "--csv")
        out, err = reader.communicate(timeout=READ_BOUND_S + 30)
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert reader.returncode == 0, err
    assert out.splitlines() == ["answer", "42"]
    assert "Traceback" not in err
    assert elapsed < READ_BOUND_S


def test_reader_gives_up_after_its_bound_in_one_line(parallel, monkeypatch, capsys):
    _, settings = parallel
    monkeypatch.setattr(warehouse, "connect", functools.partial(warehouse.connect, wait_seconds=1))
    holder = hold_write_lock(settings, 30.0)
    try:
        started = time.monotonic()
        code = cli.main(["sql", "SELECT 1"])
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    _, err = capsys.readouterr()
    assert code == 1
    assert 0.9 <= elapsed < 10
    waiting, error = err.strip().splitlines()
    assert "waiting up to 1 s" in waiting, err
    assert error.startswith("grafient: error:"), err
    assert "stayed locked" in error and "retry" in error


def test_reader_says_when_it_waits(parallel):
    _, settings = parallel
    holder = hold_write_lock(settings, 1.5)
    try:
        reader = grafient("sql", "SELECT 1 AS one", "--csv")
        _, err = reader.communicate(timeout=READ_BOUND_S + 30)
    finally:
        holder.kill()
        holder.wait()
    assert reader.returncode == 0
    assert "wait" in err.lower(), err
