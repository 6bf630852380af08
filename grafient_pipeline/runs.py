"""Launching syncs from the command line: through the running Dagster webserver when one is up
(so the run shows in the UI), in-process on the same instance otherwise."""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from grafient_pipeline import progress
from grafient_pipeline.console import say_waiting
from grafient_pipeline.instance import get_instance
from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.plans import DateRange, check_range
from grafient_pipeline.providers import get_provider, local_api_down, resolve_base_url
from grafient_pipeline.registry import Registry
from grafient_pipeline.run_workers import reap_dead_runs, worker_tags
from grafient_pipeline.settings import Settings
from grafient_pipeline.sync import Slice, slice_totals, utc_today
from grafient_pipeline.warehouse import connect

DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
JOB_NAME = "openai_costs_job"
FORCE_SYNC_JOB = "force_sync"  # the same assets and checks, under the name the UI shows


class SyncError(RuntimeError):
    """A sync run that did not succeed."""


@dataclass(frozen=True)
class SyncSummary:
    piece: Slice
    run_id: str
    where: str
    rows_before: int
    usd_before: Decimal
    rows_after: int
    usd_after: Decimal


def dagster_url() -> str:
    return os.environ.get("GRAFIENT_DAGSTER_URL", DEFAULT_DAGSTER_URL).rstrip("/")


@dataclass(frozen=True)
class Webserver:
    """What answers at GRAFIENT_DAGSTER_URL: ``ours`` only when it serves this home's instance."""

    url: str
    ours: bool
    why: str  # for people: why runs go (or do not go) there


_INSTANCE_INFO = "{ instance { info } }"


def find_webserver(settings: Settings) -> Webserver:
    """Is a Dagster webserver of THIS home up? Proven through its GraphQL: the instance it serves
    names this home's dagster_home (any other Dagster UI on the port is not ours, whatever it
    answers)."""
    url = dagster_url()
    try:
        httpx.get(f"{url}/server_info", timeout=0.5).raise_for_status()
    except httpx.HTTPError:
        return Webserver(url, False, f"no Dagster webserver answers at {url}")
    try:
        answer = httpx.post(f"{url}/graphql", json={"query": _INSTANCE_INFO}, timeout=5)
        info = answer.json()["data"]["instance"]["info"] or ""
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        info = ""
    if _serves(info, settings.dagster_home):
        return Webserver(url, True, f"the Dagster webserver of this home at {url}")
    return Webserver(
        url,
        False,
        f"the Dagster webserver at {url} does not serve this GRAFIENT_HOME ({settings.home}), "
        "so nothing is sent to it",
    )


def _serves(instance_info: str, dagster_home: Path) -> bool:
    """Does a webserver's instance description (its dagster.yaml, resolved) use this folder?"""
    try:
        config = yaml.safe_load(instance_info) or {}
        base_dir = config["local_artifact_storage"]["config"]["base_dir"]
    except (yaml.YAMLError, KeyError, TypeError):
        return False
    return Path(str(base_dir)).resolve() == dagster_home.resolve()


def _slice_state(settings: Settings, piece: Slice) -> tuple[int, Decimal]:
    with connect(settings.warehouse, on_wait=say_waiting) as conn:
        ensure_schema(conn)
        return slice_totals(conn, "fct_costs", piece)


def _ensure_partition(settings: Settings, integration_id: str) -> None:
    instance = get_instance(settings)
    if not instance.has_dynamic_partition("integrations", integration_id):
        instance.add_dynamic_partitions("integrations", [integration_id])


def run_sync(
    settings: Settings,
    registry: Registry,
    integration_id: str,
    dates: DateRange,
    reason: str,
    out: TextIO = sys.stdout,
) -> SyncSummary:
    integration = registry.get(integration_id)
    check_range(integration.plan, dates, utc_today())
    provider = get_provider(integration.provider)
    down = local_api_down(resolve_base_url(provider, integration.base_url))
    if down:
        raise SyncError(f"{integration.id}: {down}")
    piece = Slice(integration.id, dates)
    rows_before, usd_before = _slice_state(settings, piece)
    _ensure_partition(settings, integration.id)
    webserver = find_webserver(settings)
    if webserver.ours:
        run_id, where = _submit(webserver.url, piece, reason, out), f"submitted to {webserver.url}"
    else:
        run_id = _run_in_process(settings, piece, reason, out, webserver.why)
        where = "in-process"
    rows_after, usd_after = _slice_state(settings, piece)
    return SyncSummary(piece, run_id, where, rows_before, usd_before, rows_after, usd_after)


def _tags(piece: Slice, reason: str) -> dict[str, str]:
    from grafient_pipeline.partitions import request_tags

    return request_tags([piece.integration_id], piece.dates, reason, utc_today())


def _job_name(reason: str) -> str:
    return FORCE_SYNC_JOB if reason == "force sync" else JOB_NAME


def _run_in_process(settings: Settings, piece: Slice, reason: str, out: TextIO, why: str) -> str:
    from grafient_pipeline.definitions import build_definitions

    print(f"syncing {piece} ({piece.dates.days} days) in-process: {why}", file=out, flush=True)
    instance = get_instance(settings)
    for run_id in reap_dead_runs(settings, instance):
        print(f"marked run {run_id} failed: its process had died", file=out, flush=True)
    job = build_definitions(settings).resolve_job_def(_job_name(reason))
    tags = {**_tags(piece, reason), **worker_tags()}
    with progress.shown_on(out):
        result = job.execute_in_process(
            instance=instance,
            tags=tags,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        )
    if not result.success:
        raise SyncError(f"sync of {piece} failed: {_failure_message(result)}")
    return result.run_id


def _failure_message(result: Any) -> str:  # a dagster ExecuteInProcessResult
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            first_line = error.message.strip().splitlines()[0] if error.message else ""
            return re.sub(r"^[\w.]+(Failure|Error): ", "", first_line) or error.cls_name
    return "see the run's logs in the Dagster UI"


def _submit(url: str, piece: Slice, reason: str, out: TextIO) -> str:
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    parsed = httpx.URL(url)
    client = DagsterGraphQLClient(parsed.host, port_number=parsed.port)
    print(f"submitting {piece} to the Dagster instance at {url}", file=out, flush=True)
    try:
        run_id = client.submit_job_execution(_job_name(reason), tags=_tags(piece, reason))
        status = _wait(client, run_id, url, out)
    except DagsterGraphQLClientError as error:
        raise SyncError(f"the Dagster webserver at {url} refused the run: {error}") from None
    if status != "SUCCESS":
        raise SyncError(f"run {run_id} ended {status}; see {url}/runs/{run_id}")
    return run_id


def _wait(client: Any, run_id: str, url: str, out: TextIO, timeout: float = 3600) -> str:
    print(f"run {run_id}: {url}/runs/{run_id}", file=out, flush=True)
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status != last:
            print(f"  {status.lower()}", file=out, flush=True)
            last = status
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            return status
        time.sleep(1)
    raise SyncError(f"run {run_id} still running after {timeout:.0f} s; see {url}/runs/{run_id}")
