"""Issue 14: installable anywhere (a wheel that carries its SQL models), and Dagster's `dg` CLI.

The wheel is built from a copy of this checkout, installed into a fresh venv under tmp_path (its
dependencies come from this interpreter's site-packages through a .pth line, so nothing is
downloaded) and run from a folder that is not the checkout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from grafient_pipeline import demo
from grafient_pipeline.instance import dagster_environment, prepare_home
from grafient_pipeline.settings import Settings, load_settings
from grafient_pipeline.warehouse import SQL_DIR, load_models

ROOT = Path(__file__).resolve().parent.parent
NO_WEBSERVER = "http://127.0.0.1:9"  # nothing listens there: runs stay in-process
MODEL_NAMES = sorted(path.stem for path in (ROOT / "dbt_like_sql").glob("*.sql"))
PROVIDER_MODELS = sorted(p.stem for p in (ROOT / "grafient_pipeline" / "providers").glob("*/*.sql"))
ALL_MODELS = sorted(MODEL_NAMES + PROVIDER_MODELS)
NOT_BUILD_INPUT = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*cache", ".hypothesis",
    ".grafient", "results", "artifacts",
)  # fmt: skip
LOCATION_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
DAGSTER_NOISE = ("SupersessionWarning", "BetaWarning", "Traceback")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    elsewhere: Path  # the working folder of every command: not the checkout

    def run(self, *args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
        env = _clean_env() | {"GRAFIENT_HOME": str(home), "GRAFIENT_DAGSTER_URL": NO_WEBSERVER}
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=self.elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH (nor other PYTHON* or GRAFIENT_* settings) leading to the checkout."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "GRAFIENT_"))}


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", *args, "--no-index", "--quiet"]
    result = subprocess.run(command, env=_clean_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr


def _site_packages(python: Path | str) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.check_output([str(python), "-c", code], text=True).strip())


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source, dist, venv = root / "source", root / "dist", root / "venv"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_BUILD_INPUT)
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source))
    (wheel,) = dist.glob("grafient_pipeline-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    _pip("--python", str(python), "install", "--no-deps", str(wheel))
    # Then the dependencies (pip would take the checkout's install there for this very package).
    # A plain path line: its own .pth files, the checkout's editable install among them, stay off.
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (_site_packages(python) / "dependencies.pth").write_text("\n".join(sorted(dependencies)))
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return Installed(wheel, venv, elsewhere)


def test_the_wheel_ships_the_sql_models_people_edit(installed: Installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        for name in MODEL_NAMES:
            shipped = wheel.read(f"grafient_pipeline/sql/{name}.sql")
            assert shipped == (ROOT / "dbt_like_sql" / f"{name}.sql").read_bytes()


def test_the_installed_wheel_loads_its_own_models(installed: Installed, tmp_path: Path):
    code = (
        "import grafient_pipeline, grafient_pipeline.warehouse as w; "
        "print(grafient_pipeline.__file__); print(','.join(sorted(w.load_models())))"
    )
    result = installed.run("python", "-c", code, home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    module_file, models = result.stdout.split()
    assert Path(module_file).is_relative_to(installed.venv), "imported the checkout, not the wheel"
    assert models.split(",") == ALL_MODELS


@pytest.mark.e2e
def test_the_installed_wheel_runs_sql_and_the_demo_from_another_folder(
    installed: Installed, tmp_path: Path
):
    home = tmp_path / "home"
    sql = installed.run("grafient", "sql", "select 1 AS one", home=home)
    assert sql.returncode == 0, sql.stderr
    assert sql.stdout.split()[:3] == ["one", "---", "1"]

    demo_run = installed.run(
        "grafient", "demo", "--no-ui", "--emulator-port", "0", home=home, timeout=240
    )
    assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr
    assert "what the warehouse says" in demo_run.stdout
    assert "acme-research" in demo_run.stdout
    assert demo_run.stderr == ""


def test_the_checkout_reads_the_models_from_dbt_like_sql():
    assert SQL_DIR.resolve() == (ROOT / "dbt_like_sql").resolve()
    provider_models = {
        path.stem for path in (ROOT / "grafient_pipeline" / "providers").glob("*/*.sql")
    }
    assert set(load_models()) == set(MODEL_NAMES) | provider_models


def test_an_install_without_its_models_says_what_to_do(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"no SQL models in .*: reinstall grafient"):
        load_models(tmp_path)


def _env_with_home(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "GRAFIENT_HOME": str(tmp_path), "GRAFIENT_DAGSTER_URL": NO_WEBSERVER}


def test_dg_check_defs_passes(tmp_path: Path):
    env = _env_with_home(tmp_path) | {"DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dagster_dg_cli.cli", "check", "defs"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully." in result.stdout


def test_the_demo_workspace_is_the_repository_workspace():
    assert yaml.safe_load(demo.WORKSPACE_YAML) == yaml.safe_load(
        (ROOT / "workspace.yaml").read_text()
    )


@pytest.fixture
def demo_settings(tmp_path: Path) -> Settings:
    settings = load_settings(_env_with_home(tmp_path / "home"))
    prepare_home(settings)
    return settings


def _import_definitions(env: dict[str, str], cwd: Path) -> str:
    command = [sys.executable, "-c", "import grafient_pipeline.definitions"]
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_loading_the_definitions_prints_nothing(demo_settings: Settings, tmp_path: Path):
    """No Beta/Preview/Supersession notices: the UI's output is for what a person needs."""
    assert _import_definitions(dagster_environment(demo_settings), tmp_path) == ""


def _location_loaded(url: str, process: subprocess.Popen) -> bool:
    assert process.poll() is None, f"dg dev exited early (code {process.returncode})"
    try:
        response = httpx.post(f"{url}/graphql", json={"query": LOCATION_QUERY}, timeout=2)
        entries = response.json()["data"]["workspaceOrError"]["locationEntries"]
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return False
    return {(e["name"], e["loadStatus"]) for e in entries} == {("grafient_pipeline", "LOADED")}


def _start_demo_ui(settings: Settings, cwd: Path, log: Path) -> tuple[str, subprocess.Popen]:
    """The demo's `dg dev`, started from a folder that is not the checkout; its output in log."""
    port = demo.free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            demo.ui_command(demo.write_workspace(settings), port),
            env=dagster_environment(settings),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return f"http://127.0.0.1:{port}", process


@pytest.mark.e2e
def test_the_demo_ui_starts_with_dg_dev_and_prints_no_dagster_noise(
    demo_settings: Settings, tmp_path: Path
):
    log = tmp_path / "dg-dev.log"
    url, process = _start_demo_ui(demo_settings, tmp_path, log)
    try:
        deadline = time.monotonic() + 120
        while not _location_loaded(url, process):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(1)
        assert httpx.get(f"{url}/server_info", timeout=5).status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    output = log.read_text()
    assert not [noise for noise in DAGSTER_NOISE if noise in output], output
