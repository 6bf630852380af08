"""Issue 19: the container image and its deployments (deploy/), tested without a container runtime.

The compose file, the workspace and the Helm values parse and name only what exists: commands
and their options (from each command's --help), modules and attributes, environment variables
the code reads. The image's install step (deploy/install.sh) and entrypoint run in a fresh venv
from the wheel, as the Dockerfile runs them. Nothing here builds or starts a container.
"""

from __future__ import annotations

import importlib
import itertools
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import dagster as dg
import pytest
import yaml

from grafient_pipeline.dashboard.security import TOKEN_ENV
from grafient_pipeline.lake import parse_catalog
from grafient_pipeline.settings import DAGSTER_POSTGRES_URL, POSTGRES_DRIVER_SCHEME, load_settings
from tests.test_packaging import Installed, _clean_env, _site_packages, installed  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
GRAFIENT_SERVICES = {"code", "webserver", "daemon", "dashboard"}
DAGSTER_READS = {"DAGSTER_HOME"}  # read by Dagster itself
INTERPOLATION = re.compile(r"\$\{([A-Z_]+)(?::\?[^}]*)?\}")


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())


def _helm_deployment() -> dict:
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, (KEYWORD, arguments), per stage; continuations joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def _env_of(service: dict) -> dict[str, str]:
    """A service's environment with ${VAR:?...} placeholders filled as an operator would."""
    filled = {"POSTGRES_PASSWORD": "pw", "GRAFIENT_MASTER_KEY": "a2V5", TOKEN_ENV: "token"}
    return {
        k: INTERPOLATION.sub(lambda m: filled[m[1]], v) for k, v in service["environment"].items()
    }


def _commands() -> list[list[str]]:
    services = _compose()["services"]
    compose = [services[name]["command"] for name in sorted(GRAFIENT_SERVICES)]
    helm = ["dagster", "api", "grpc", *_helm_deployment()["dagsterApiGrpcArgs"]]
    return [*compose, helm]


@cache
def _help(*words: str) -> str:
    result = subprocess.run(
        [str(BIN / words[0]), *words[1:], "--help"],
        capture_output=True, text=True, timeout=120, env=os.environ | {"GRAFIENT_HOME": "/none"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def _source_text() -> str:
    package = ROOT / "grafient_pipeline"
    return "\n".join(p.read_text() for p in package.rglob("*.py"))


def test_compose_starts_postgres_the_webserver_the_daemon_the_code_and_the_dashboard():
    compose = _compose()
    assert set(compose["services"]) == GRAFIENT_SERVICES | {"postgres"}
    for name in GRAFIENT_SERVICES:
        service = compose["services"][name]
        env = _env_of(service)
        assert f"grafient-home:{env['GRAFIENT_HOME']}" in service["volumes"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert compose["services"]["code"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert set(compose["volumes"]) == {"grafient-home", "postgres-data"}


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c[:3]))
def test_every_command_and_option_exists(command: list[str]):
    """Each executable is installed and its --help lists every option the deployment passes."""
    leading = command[: command.index(next(w for w in command if w.startswith("-")))]
    assert (BIN / command[0]).exists(), f"{command[0]} is not installed"
    help_text = _help(*leading)
    for option in (w for w in command if w.startswith("--")):
        assert re.search(rf"(^|[\s,]){re.escape(option)}\b", help_text), (option, leading)


def test_the_dashboard_is_a_grafient_command_and_the_help_names_the_postgres_setting():
    assert re.search(r"^\s+dashboard\s", _help("grafient"), re.MULTILINE)
    assert re.search(rf"^\s+{DAGSTER_POSTGRES_URL}\s", _help("grafient"), re.MULTILINE)


@pytest.mark.parametrize("source", ["compose", "helm"])
def test_the_code_location_loads_the_project_definitions(source: str):
    if source == "compose":
        args = _compose()["services"]["code"]["command"]
    else:
        args = _helm_deployment()["dagsterApiGrpcArgs"]
    option = dict(itertools.pairwise(args))
    module = importlib.import_module(option["--module-name"])
    assert isinstance(getattr(module, option["--attribute"]), dg.Definitions)
    local = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]
    assert option["--location-name"] == local["python_module"]["location_name"]


def test_the_workspace_reaches_the_code_service_on_its_port():
    (entry,) = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())["load_from"]
    server = entry["grpc_server"]
    code = _compose()["services"]["code"]["command"]
    assert server["host"] == "code"
    assert str(server["port"]) == code[code.index("--port") + 1]
    assert server["location_name"] == code[code.index("--location-name") + 1]


def test_every_environment_variable_named_is_one_the_code_reads():
    source = _source_text()
    services = _compose()["services"]
    names = {n for s in GRAFIENT_SERVICES for n in services[s]["environment"]}
    names |= {item["name"] for item in _helm_deployment()["env"]}
    helm_text = (DEPLOY / "helm" / "values.yaml").read_text()
    names |= set(re.findall(r"--from-literal=(GRAFIENT_[A-Z_]+)=", helm_text))
    assert DAGSTER_POSTGRES_URL in names and TOKEN_ENV in names
    unread = {n for n in names - DAGSTER_READS if f'"{n}"' not in source}
    assert not unread, f"no code reads {sorted(unread)}"


def test_the_settings_read_from_the_compose_environment():
    env = _env_of(_compose()["services"]["dashboard"])
    settings = load_settings(env)
    assert settings.dagster_home == Path(env["DAGSTER_HOME"])  # the webserver serves this home
    assert settings.dagster_postgres_url.startswith(f"{POSTGRES_DRIVER_SCHEME}://grafient:pw@")
    assert settings.master_key_b64 == "a2V5"
    assert env["GRAFIENT_DAGSTER_URL"] == "http://webserver:3000"
    # beyond one machine: the registry and the lake's catalog in databases the init script makes
    assert settings.registry_url.startswith(f"{POSTGRES_DRIVER_SCHEME}://grafient:pw@postgres")
    catalog = parse_catalog(settings.warehouse)
    assert catalog.password == "pw" and "pw" not in catalog.describe()
    init = (DEPLOY / "postgres-init.sql").read_text()
    for url in (settings.registry_url, settings.warehouse):
        assert f"CREATE DATABASE {url.rsplit('/', 1)[1]};" in init
    assert settings.lake_data_path.startswith(env["GRAFIENT_HOME"])  # on the shared volume


def test_the_image_is_multi_stage_runs_unprivileged_and_bakes_in_no_secret():
    stages = _dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    (user,) = [args for keyword, args in final if keyword == "USER"]
    assert user not in ("root", "0")
    env = dict(
        pair.split("=", 1)
        for keyword, args in final
        if keyword == "ENV"
        for pair in shlex.split(args)
    )
    assert env["DAGSTER_HOME"] == env["GRAFIENT_HOME"] + "/dagster_home"
    volumes = [args for keyword, args in final if keyword == "VOLUME"]
    assert volumes == [f'["{env["GRAFIENT_HOME"]}"]']
    everything = (DEPLOY / "Dockerfile").read_text()
    for secret in ("MASTER_KEY", "PASSWORD", "TOKEN", "sk-", DAGSTER_POSTGRES_URL):
        assert secret not in everything
    for keyword, args in final:
        if keyword == "COPY" and not args.startswith("--from"):
            for path in shlex.split(args)[:-1]:
                assert (ROOT / path).exists(), path
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", ".grafient"} <= set(ignored)


def _write_dependency_scripts(venv: Path) -> None:
    """The console scripts pip would install with Dagster (its packages come from this
    environment, already installed, so pip writes none), run by the fresh venv's python."""
    wanted = ("dagster", "dagster-webserver", "dagster-daemon")
    code = (
        "import importlib.metadata as m; print('\\n'.join(f'{e.name} {e.value}' for e in "
        f"m.entry_points(group='console_scripts') if e.name in {wanted!r}))"
    )
    python = venv / "bin" / "python"
    listing = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    for line in listing.stdout.splitlines():
        name, target = line.split()
        module, function = target.split(":")
        script = venv / "bin" / name
        script.write_text(
            f"#!{python}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
        )
        script.chmod(0o755)


def test_the_image_install_step_and_entrypoint_run_in_a_fresh_venv(
    installed: Installed,  # noqa: F811
    tmp_path: Path,
):
    """deploy/install.sh with the wheel (dependencies from this environment, offline), then the
    entrypoint: it writes the PostgreSQL dagster.yaml without the URL and runs the command."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    dependencies = _site_packages(sys.executable)
    (_site_packages(venv / "bin" / "python") / "dependencies.pth").write_text(f"{dependencies}\n")
    _write_dependency_scripts(venv)
    env = _clean_env() | {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "HOME": str(tmp_path),
    }
    install = subprocess.run(
        ["sh", str(DEPLOY / "install.sh"), str(installed.wheel.parent)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    where = subprocess.run(
        ["python", "-c", "import grafient_pipeline; print(grafient_pipeline.__file__)"],
        env=env, capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout  # fmt: skip
    assert Path(where.strip()).is_relative_to(venv), "imported the checkout, not the wheel"

    home = tmp_path / "home"
    url = "postgresql://grafient:pw-not-in-files@postgres:5432/dagster"
    run_env = env | {"GRAFIENT_HOME": str(home), DAGSTER_POSTGRES_URL: url}
    started = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), "grafient", "--help"],
        env=run_env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "dashboard" in started.stdout
    config = (home / "dagster_home" / "dagster.yaml").read_text()
    assert yaml.safe_load(config)["storage"]["postgres"]["postgres_url"] == {
        "env": DAGSTER_POSTGRES_URL
    }
    assert "pw-not-in-files" not in config
