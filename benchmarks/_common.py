"""Shared plumbing for the benchmark scripts (not a test helper: benchmarks print figures).

- ``Emulator``: the Costs API emulator in a separate process (its own core), with its request
  count, its exact expected totals and its CPU time read from ``/proc/<pid>/stat``.
- ``run_child``: run a command in a child process and return its wall time and peak RSS
  (``ru_maxrss`` of exactly that child, from ``os.wait4``).
- ``save_result`` / ``load_result``: JSON figures under ``benchmarks/results/`` (gitignored).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PYTHON = sys.executable
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
CLK_TCK = os.sysconf("SC_CLK_TCK")
GROUP_BY = ("line_item", "project_id", "api_key_id")


def org_keys(count: int, prefix: str = "bench") -> dict[str, str]:
    """Deterministic organizations and their (fake) admin keys."""
    return {
        f"org-{prefix}-{i:04d}": f"sk-admin-{prefix}-{i:04d}-0123456789abcdefghijklmnop"
        for i in range(count)
    }


def utc_today() -> date:
    return datetime.now(UTC).date()


def midnight(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), UTC).timestamp())


def proc_cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """User + system CPU seconds of a live process (fields 14 and 15 of /proc/<pid>/stat), plus
    (fields 16 and 17) those of the children it has waited for when asked."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


class Emulator:
    """``benchmarks/_emulator_proc.py`` as a child process."""

    def __init__(
        self,
        orgs: dict[str, str],
        results_per_day: int,
        *,
        seed: int = 0,
        clock: date | None = None,
    ) -> None:
        self.orgs = orgs
        argv = [
            PYTHON,
            str(HERE / "_emulator_proc.py"),
            "--orgs",
            json.dumps(orgs),
            "--seed",
            str(seed),
            "--results-per-day",
            str(results_per_day),
        ]
        if clock is not None:
            argv += ["--clock", clock.isoformat()]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.base_url = self._answer()["base_url"]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _answer(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("the emulator process exited")
        return json.loads(line)

    def _ask(self, command: str) -> dict[str, Any]:
        self.proc.stdin.write(command + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._answer()

    def request_count(self) -> int:
        return int(self._ask("count")["count"])

    def expected_total(self, org: str, start: date, end: date) -> Decimal:
        return Decimal(self._ask(f"expected {org} {start} {end}")["total"])

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def warm(self, org: str, start: date, end: date) -> int:
        """One request over the range, as the client makes it, so the emulator builds and caches
        the day fragments before anything is timed. Returns the bytes served."""
        days = (end - start).days + 1
        params: list[tuple[str, str | int]] = [
            ("start_time", midnight(start)),
            ("end_time", midnight(end) + 86_400),
            ("bucket_width", "1d"),
            ("limit", min(180, days)),
        ]
        params += [("group_by[]", g) for g in GROUP_BY]
        size = 0
        headers = {"Authorization": f"Bearer {self.orgs[org]}"}
        with (
            httpx.Client(timeout=600) as client,
            client.stream(
                "GET", f"{self.base_url}/organization/costs", params=params, headers=headers
            ) as response,
        ):
            response.raise_for_status()
            for chunk in response.iter_raw():
                size += len(chunk)
        return size

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, RuntimeError, ValueError):
                self._ask("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pipeline_env(home: Path, base_url: str, **extra: str) -> dict[str, str]:
    """The environment of a pipeline process: a private GRAFIENT_HOME and its DAGSTER_HOME."""
    env = dict(os.environ)
    env.pop("GRAFIENT_WAREHOUSE", None)
    env.update(
        GRAFIENT_HOME=str(home),
        GRAFIENT_OPENAI_BASE_URL=base_url,
        GRAFIENT_MASTER_KEY=MASTER_KEY,
        DAGSTER_HOME=str(home / "dagster_home"),
        GRAFIENT_DAGSTER_URL="http://127.0.0.1:9",  # no webserver: never submit to one
        PYTHONUNBUFFERED="1",
        PYTHONWARNINGS="ignore",  # Dagster beta warnings would bury the figures
    )
    env.update(extra)
    return env


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    wall_s: float
    max_rss_bytes: int
    cpu_s: float
    stdout: str


def run_child(argv: list[str], env: dict[str, str]) -> ChildRun:
    """Run ``argv`` and measure exactly that child (its own rusage via wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        proc.returncode,
        wall,
        usage.ru_maxrss * 1024,  # kilobytes on Linux
        usage.ru_utime + usage.ru_stime,
        out,
    )


def last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON result in the child's output:\n{text[-2000:]}")


def machine() -> dict[str, Any]:
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except StopIteration:
        model = platform.processor()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(int(mem) / 2**20, 1),
        "python": platform.python_version(),
    }


def save_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**data, "machine": machine(), "at": time.time()}, indent=2))
    return path


def load_result(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def days_ending(end: date, count: int) -> tuple[date, date]:
    return end - timedelta(days=count - 1), end


class Failed(SystemExit):
    """A benchmark check failed: print the reason loudly and exit non-zero."""

    def __init__(self, message: str) -> None:
        print(f"\nBENCHMARK CHECK FAILED: {message}", file=sys.stderr, flush=True)
        super().__init__(1)
