"""DuckLake for the tests: duckdb 1.5.5 and its extensions in `.ducklake-deps/` (made by `make
test`), which the DuckLake work's subprocesses put first on PYTHONPATH, shadowing the project's
duckdb 2.0 (the extensions on PyPI exist for 1.5.x only). Without the folder the tests skip,
except in CI (`CI=true`), where that is a failure (the same rule as tests/postgres.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEPS = REPO / ".ducklake-deps"
VERSION = "1.5.5"
INSTALL_HINT = "make ducklake-deps"


def deps_folder() -> Path | None:
    """The folder with duckdb 1.5.5 and the DuckLake extension packages, or None."""
    if (DEPS / f".installed-{VERSION}").is_file():
        return DEPS
    return None


def require_deps() -> Path:
    folder = deps_folder()
    if folder is None:
        reason = f"duckdb {VERSION} with the DuckLake extensions is missing ({INSTALL_HINT})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must run the DuckLake tests (make test installs it)")
        pytest.skip(reason)
    return folder


def lake_env(deps: Path, **extra: str) -> dict[str, str]:
    """The environment of a DuckLake subprocess: duckdb 1.5.5 first, then this checkout."""
    env = dict(os.environ)
    rest = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(deps), str(REPO), rest) if p)
    env.update(extra)
    return env


def run_python(deps: Path, code: str, env: dict[str, str], timeout: float = 60) -> str:
    """Run `code` in a DuckLake subprocess; its stdout (fails the test with its stderr)."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=lake_env(deps, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stderr}")
    return result.stdout
