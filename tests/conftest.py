"""Shared fixtures: an emulator on a free port, a private GRAFIENT_HOME, a Dagster instance."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import date, timedelta

import dagster as dg
import pytest

from grafient_pipeline.definitions import build_definitions
from grafient_pipeline.partitions import range_tags
from grafient_pipeline.plans import DateRange
from grafient_pipeline.providers.openai.emulator import CostsEmulator
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings, load_settings
from grafient_pipeline.sync import utc_today

# A real PostgreSQL server (session) and a database per test: tests/postgres.py.
from tests.postgres import postgres_server, postgres_url  # noqa: F401

ORG_ID = "org-test-one"
ADMIN_KEY = "sk-admin-test-one-0123456789abcdefghijklmnopqrstuvwxyz"
OTHER_ORG_ID = "org-test-two"
OTHER_KEY = "sk-admin-test-two-zyxwvutsrqponmlkjihgfedcba9876543210"
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
def emulator() -> Iterator[CostsEmulator]:
    with CostsEmulator({ORG_ID: ADMIN_KEY, OTHER_ORG_ID: OTHER_KEY}, seed=11) as running:
        yield running


@pytest.fixture
def settings(tmp_path, monkeypatch, emulator: CostsEmulator) -> Settings:
    monkeypatch.setenv("GRAFIENT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GRAFIENT_OPENAI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("GRAFIENT_MASTER_KEY", MASTER_KEY)
    monkeypatch.delenv("GRAFIENT_WAREHOUSE", raising=False)
    monkeypatch.setenv("GRAFIENT_DAGSTER_URL", "http://127.0.0.1:9")  # no webserver: in-process
    return load_settings()


@pytest.fixture
def registry(settings: Settings) -> Registry:
    return Registry.from_settings(settings)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def last_days(count: int, end: date | None = None) -> DateRange:
    end = end or utc_today() - timedelta(days=1)
    return DateRange(end - timedelta(days=count - 1), end)


def run_range(
    settings: Settings, instance: dg.DagsterInstance, integration_id: str, dates: DateRange
) -> dg.ExecuteInProcessResult:
    """One single-run range over the four cost assets, as a backfill or the schedule runs it."""
    if not instance.has_dynamic_partition("integrations", integration_id):
        instance.add_dynamic_partitions("integrations", [integration_id])
    job = build_definitions(settings).resolve_job_def("openai_costs_job")
    return job.execute_in_process(
        instance=instance, tags=range_tags(integration_id, dates), raise_on_error=False
    )


def run_cli(
    *args: str,
    stdin: str = "",
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`grafient ARGS` in a child process, as a user runs it (this process's environment by
    default), with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "grafient_pipeline.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=dict(os.environ if env is None else env),
        cwd=cwd,
        timeout=timeout,
    )
