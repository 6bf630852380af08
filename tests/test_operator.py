"""Issue 14: the operator's path. The right home, the right webserver, keys replaced, upgrades
backfilled, progress shown, and a newcomer's whole session from another folder."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from grafient_pipeline.demo import free_port
from grafient_pipeline.progress import Progress
from grafient_pipeline.providers.openai.emulator import CostsEmulator
from grafient_pipeline.settings import find_home
from grafient_pipeline.sync import utc_today
from tests.conftest import ADMIN_KEY, ORG_ID, OTHER_KEY, run_cli


@contextmanager
def foreign_dagster(other_home: Path) -> Iterator[list[str]]:
    """Something that looks like a Dagster webserver, but serves another home's instance; it
    records every GraphQL request it receives."""
    received: list[str] = []
    info = f"local_artifact_storage:\n  config:\n    base_dir: {other_home}/dagster_home\n"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer({"version": "1.13"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.append(body)
            self._answer({"data": {"instance": {"info": info}}})

        def _answer(self, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["GRAFIENT_DAGSTER_URL"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


def add(key: str = ADMIN_KEY, *extra: str, label: str = "Acme Prod", plan: str = "pro"):
    return run_cli(
        "integrations", "add", "--label", label, "--plan", plan, "--key-stdin", *extra,
        stdin=key + "\n",
    )  # fmt: skip


# 1 ------------------------------------------------------------------ the right webserver


def test_runs_never_go_to_a_webserver_of_another_home(settings, tmp_path, monkeypatch):
    assert add(ADMIN_KEY, "--no-backfill").returncode == 0
    with foreign_dagster(tmp_path / "someone-else") as received:
        monkeypatch.setenv("GRAFIENT_DAGSTER_URL", os.environ["GRAFIENT_DAGSTER_URL"])
        synced = run_cli("sync", "acme-prod")
    assert synced.returncode == 0, synced.stderr
    assert "does not serve this GRAFIENT_HOME" in synced.stdout + synced.stderr
    assert "in-process" in synced.stdout
    assert all("instance" in body and "launch" not in body.lower() for body in received)


# 2 ------------------------------------------------------------------ the right home


def test_the_home_is_found_like_git_finds_its_folder(tmp_path):
    project = tmp_path / "project"
    (project / ".grafient" / "dagster_home").mkdir(parents=True)
    deep = project / "src" / "deeper"
    deep.mkdir(parents=True)
    user = {"HOME": str(tmp_path / "user")}

    assert find_home(user, deep) == (project / ".grafient", f"found in {project}")
    assert find_home(user, tmp_path) == (tmp_path / "user" / ".grafient", "the per-user default")
    explicit = {**user, "GRAFIENT_HOME": str(tmp_path / "mine")}
    assert find_home(explicit, deep) == (tmp_path / "mine", "GRAFIENT_HOME")


def test_read_only_commands_never_create_a_home(tmp_path, monkeypatch):
    monkeypatch.delenv("GRAFIENT_HOME", raising=False)
    env = {**os.environ, "HOME": str(tmp_path / "user")}
    for args in (("integrations", "list"), ("sql", "SELECT 1"), ("report",)):
        result = run_cli(*args, env=env, cwd=str(tmp_path))
        assert result.returncode == 1, args
        assert "no Grafient home yet" in result.stderr
    assert not (tmp_path / "user").exists() and not (tmp_path / ".grafient").exists()
    assert "home in use:" in run_cli("--help", env=env, cwd=str(tmp_path)).stdout


# 3, 4, 5 ---------------------------------------------------------- keys, plans, URLs


def test_set_key_tests_first_and_keeps_the_organization(settings, registry, emulator):
    assert add(ADMIN_KEY, "--no-backfill").returncode == 0
    registry.set_status("acme-prod", "error", "OpenAI rejected the admin key")

    other_org = run_cli("integrations", "set-key", "acme-prod", "--key-stdin", stdin=OTHER_KEY)
    assert other_org.returncode == 1 and "same organization" in other_org.stderr
    bad = run_cli("integrations", "set-key", "acme-prod", "--key-stdin", stdin="sk-admin-nope")
    assert bad.returncode == 1 and "the old key stays" in bad.stderr
    assert (
        registry.api_key("acme-prod") == ADMIN_KEY and registry.get("acme-prod").status == "error"
    )

    replaced = run_cli("integrations", "set-key", "acme-prod", "--key-stdin", stdin=ADMIN_KEY)
    assert replaced.returncode == 0, replaced.stderr
    stored = registry.get("acme-prod")
    assert (stored.status, stored.last_error, stored.organization_id) == ("active", None, ORG_ID)


def test_a_plan_upgrade_without_a_webserver_backfills_the_new_days(settings, emulator):
    assert add(ADMIN_KEY, label="Acme", plan="free").returncode == 0
    upgraded = run_cli("integrations", "set-plan", "acme", "Pro")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "plan pro" in upgraded.stdout
    assert "in-process" in upgraded.stderr and "rows" in upgraded.stderr
    days = run_cli("sql", "SELECT count(DISTINCT cost_date) AS days FROM fct_costs", "--csv")
    assert int(days.stdout.splitlines()[1]) > 30


def test_an_integration_keeps_the_api_it_was_added_with(settings, emulator, monkeypatch):
    assert add(ADMIN_KEY, "--no-backfill").returncode == 0
    monkeypatch.setenv("GRAFIENT_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # another API now
    listed = run_cli("integrations", "test", "acme-prod")
    assert listed.returncode == 0, listed.stderr  # still the emulator it was added with


# 6 ------------------------------------------------------------------ progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_redraws_one_line_on_a_terminal():
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, interactive=True, clock=clock)
    for day in range(1, 181):
        clock.now += 0.01
        progress.update("acme 180 days", day, 180, day * 10_000)
    progress.close()
    frames = out.getvalue().split("\r")
    assert 10 <= len(frames) <= 30  # at most ten redraws a second, plus the last
    assert "180/180 days [########################] 1,800,000 rows" in frames[-1]
    assert out.getvalue().endswith("\n")


def test_progress_in_a_pipe_is_a_few_plain_lines():
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, interactive=False, clock=clock)
    for day in range(1, 181):
        clock.now += 1.0
        progress.update("acme", day, 180, day)
    lines = out.getvalue().splitlines()
    assert 5 <= len(lines) <= 11 and "\r" not in out.getvalue()


# the newcomer's session ---------------------------------------------------------------


@pytest.mark.e2e
def test_a_newcomers_session_from_another_folder(tmp_path, monkeypatch):
    """Demo without UI -> sync, report, sql from another folder -> the demo's emulator stops ->
    sync says how to start it; no run reaches a foreign webserver."""
    for name in ("GRAFIENT_HOME", "GRAFIENT_OPENAI_BASE_URL", "GRAFIENT_WAREHOUSE"):
        monkeypatch.delenv(name, raising=False)
    checkout, elsewhere = tmp_path / "checkout", tmp_path / "elsewhere"
    checkout.mkdir()
    elsewhere.mkdir()
    env = {**os.environ, "HOME": str(tmp_path / "user")}
    with foreign_dagster(tmp_path / "another-home") as received:
        env["GRAFIENT_DAGSTER_URL"] = os.environ["GRAFIENT_DAGSTER_URL"]
        port = str(free_port())
        demo = run_cli("demo", "--no-ui", "--emulator-port", port, env=env, cwd=str(checkout),
                       timeout=300)  # fmt: skip
        assert demo.returncode == 0, demo.stderr
        with CostsEmulator(port=int(port)):  # the demo's organizations, on the demo's port
            synced = run_cli("sync", "acme-research", env=env, cwd=str(elsewhere))
        assert synced.returncode == 0, synced.stderr
        month = (utc_today() - timedelta(days=1)).strftime("%Y-%m")  # today may have no spend yet
        report = run_cli("report", "--month", month, env=env, cwd=str(elsewhere))
        assert report.returncode == 0 and "acme-research" in report.stdout
        sql = run_cli("sql", "SELECT count(*) AS n FROM fct_costs", "--csv", env=env,
                      cwd=str(elsewhere))  # fmt: skip
        assert int(sql.stdout.splitlines()[1]) > 0
        stopped = run_cli("sync", "acme-research", env=env, cwd=str(elsewhere))
    assert stopped.returncode == 1
    assert "not running" in stopped.stderr and "grafient demo" in stopped.stderr
    assert all("launch" not in body.lower() for body in received)
    status = json.loads(run_cli("integrations", "list", "--json", env=env).stdout)
    assert {i["status"] for i in status} == {"active"}  # the emulator, not the keys, was down
