"""A run whose worker process died is failed and its duckdb pool slot freed, whoever launched it."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid

import dagster as dg

from grafient_pipeline.definitions import build_definitions
from grafient_pipeline.defs.resources import RegistryResource
from grafient_pipeline.instance import get_instance
from grafient_pipeline.run_workers import HOST_TAG, PID_TAG, worker_tags
from tests.conftest import ADMIN_KEY, ORG_ID, last_days, run_range


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(
            job_name="openai_costs_job",
            run_id=run_id,
            status=dg.DagsterRunStatus.STARTED,
            tags=tags,
        )
    )
    return run_id


def test_a_run_launched_without_tags_records_its_worker(settings, registry, instance):
    integration = registry.add("Org", "pro", ADMIN_KEY, organization_id=ORG_ID)
    result = run_range(settings, instance, integration.id, last_days(2))
    assert result.success
    tags = instance.get_run_by_id(result.run_id).tags
    assert (tags[PID_TAG], tags[HOST_TAG]) == (str(os.getpid()), socket.gethostname())


def test_the_sensor_fails_a_dead_run_frees_its_slot_and_keeps_a_live_runs_files(settings):
    instance = get_instance(settings)
    here = socket.gethostname()
    dead = _started_run(instance, {PID_TAG: str(_dead_pid()), HOST_TAG: here})
    alive = _started_run(instance, worker_tags())
    elsewhere = _started_run(instance, {PID_TAG: str(_dead_pid()), HOST_TAG: here + "-other"})
    instance.event_log_storage.claim_concurrency_slot("duckdb", dead, "openai_cost_buckets")
    settings.staging_dir.mkdir(parents=True)
    files = {run: settings.staging_dir / f"{run}-acme-2026-01-01.0.stage" for run in (dead, alive)}
    for path in files.values():
        path.write_text("")

    sensor = build_definitions(settings).resolve_sensor_def("integrations_sensor")
    context = dg.build_sensor_context(
        instance=instance, resources={"registry": RegistryResource(home=str(settings.home))}
    )
    sensor.evaluate_tick(context)

    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
    assert instance.get_run_by_id(elsewhere).status == dg.DagsterRunStatus.STARTED
    assert instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots == []
    assert not files[dead].exists() and files[alive].exists()
