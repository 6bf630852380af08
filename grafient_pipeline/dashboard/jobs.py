"""Long actions (Force Sync, backfill) run one at a time in a worker process; pages poll them.

DuckDB has one writer per file, so the jobs of this dashboard form one queue. Each job keeps
its progress lines (already scrubbed by the worker) and its outcome for the JSON endpoint.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from grafient_pipeline.dashboard.worker import RESULT_PREFIX
from grafient_pipeline.redact import scrub

KEPT_JOBS = 50
KEPT_LINES = 40
ACTIVE = ("queued", "running")


@dataclass
class Job:
    id: str
    kind: str  # "sync" or "backfill"
    integration_id: str
    args: tuple[str, ...]
    state: str = "queued"  # queued, running, succeeded, failed
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=KEPT_LINES))
    message: str = ""
    run_id: str | None = None
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def public(self) -> dict[str, Any]:
        ended = self.finished_at or time.time()
        return {
            "id": self.id,
            "kind": self.kind,
            "integration_id": self.integration_id,
            "state": self.state,
            "message": self.message,
            "run_id": self.run_id,
            "last_line": self.lines[-1] if self.lines else "",
            "lines": list(self.lines),
            "elapsed_s": round(ended - self.started_at, 1) if self.started_at else 0.0,
        }


class JobRunner:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._env = dict(os.environ if env is None else env)
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._work, name="grafient-jobs", daemon=True)
        self._thread.start()

    def submit(self, kind: str, integration_id: str, *args: str) -> Job:
        """Queue a job; an integration that already has one queued or running gets that one."""
        with self._lock:
            for job in self._jobs.values():
                if job.integration_id == integration_id and job.active:
                    return job
            job = Job(uuid.uuid4().hex[:12], kind, integration_id, tuple(args))
            self._jobs[job.id] = job
            while len(self._jobs) > KEPT_JOBS:
                oldest = next(j for j in self._jobs.values() if not j.active)
                del self._jobs[oldest.id]
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def latest_for(self, integration_id: str) -> Job | None:
        mine = [j for j in self.jobs() if j.integration_id == integration_id]
        return max(mine, key=lambda j: j.queued_at) if mine else None

    def stop(self) -> None:
        self._queue.put(None)
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            job.state, job.started_at = "running", time.time()
            try:
                self._run(job)
            except Exception as error:  # the worker could not even start
                job.state, job.message = "failed", scrub(f"{type(error).__name__}: {error}")
            job.finished_at = time.time()

    def _run(self, job: Job) -> None:
        command = [sys.executable, "-m", "grafient_pipeline.dashboard.worker", job.kind,
                   job.integration_id, *job.args]  # fmt: skip
        env = {**self._env, "PYTHONUNBUFFERED": "1"}
        with subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace",
        ) as process:  # fmt: skip
            self._process = process
            result = None
            for raw in process.stdout:  # type: ignore[union-attr]
                line = scrub(raw.rstrip())
                if line.startswith(RESULT_PREFIX):
                    result = json.loads(line[len(RESULT_PREFIX) :])
                elif line:
                    job.lines.append(line)
            process.wait()
        self._process = None
        if result is None:
            job.state = "failed"
            job.message = f"the worker exited with code {process.returncode} without a result"
            return
        job.state = "succeeded" if result["ok"] else "failed"
        job.message, job.run_id = result["message"], result.get("run_id")
