"""Which process runs a run, and failing the runs whose process died.

Every run records its worker process (pid and host) as run tags: the CLI when it runs one in
process, the assets themselves when the daemon launched it. A run whose process died (SIGKILL,
out of memory, power loss) stays STARTED in Dagster's storage and keeps the duckdb pool's only
slot, which would block every later run; ``reap_dead_runs`` finds such runs on this host, marks
them failed and frees their slots. The CLI calls it before an in-process run and the
integrations sensor every 30 s, so the daemon's runs are covered too.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from grafient_pipeline.settings import Settings

PID_TAG = "grafient/pid"
HOST_TAG = "grafient/host"
_RUN_ID_LENGTH = 36  # a Dagster run id (uuid4 text) starts every staging file's name


def worker_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_runs(settings: Settings, instance: Any) -> list[str]:
    """Fail the runs of this host whose process died, free their pool slots, and delete the
    staging files of runs that are over."""
    import dagster as dg

    running = instance.get_runs(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
    )
    reaped = []
    for run in running:
        pid = run.tags.get(PID_TAG, "")
        here = run.tags.get(HOST_TAG) == socket.gethostname()
        if here and pid.isdigit() and not process_alive(int(pid)):
            instance.report_run_failed(run, f"the process running it (pid {pid}) died")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            reaped.append(run.run_id)
    if settings.staging_dir.is_dir():
        for path in settings.staging_dir.iterdir():
            run = instance.get_run_by_id(path.name[:_RUN_ID_LENGTH])
            if run is None or run.is_finished:  # never a file a live run is still writing
                path.unlink(missing_ok=True)
    return reaped
