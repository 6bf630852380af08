"""`grafient demo`: the providers' emulators, three demo integrations (two OpenAI, one
Anthropic), their backfills, a summary, spend intelligence, the UI and the dashboard."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from grafient_pipeline.console import describe_sync, print_table
from grafient_pipeline.instance import dagster_environment, prepare_home
from grafient_pipeline.operations import add_integration, list_integrations, run_backfill
from grafient_pipeline.settings import Settings

DEMO_INTEGRATIONS = (
    # (label, plan, provider, emulator organization)
    ("Acme Production", "free", "openai", "org-acme-prod"),
    ("Acme Research", "pro", "openai", "org-acme-research"),
    ("Acme Claude", "pro", "anthropic", "org-acme-claude"),
)
# The repository's workspace.yaml, written into GRAFIENT_HOME: an installed wheel has no checkout,
# and the code location keeps its name whichever way the UI was started.
WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: grafient_pipeline.definitions
      attribute: defs
      location_name: grafient_pipeline
"""
# Fixed, so that a restarted demo finds the emulators its integrations were added with: the
# first provider's emulator on this port, the next one's on the next port, and so on.
DEMO_EMULATOR_PORT = 8700


class DemoError(RuntimeError):
    """The demo cannot go on: its message says why and what to do."""


SUMMARY_SQL = {
    "Spend per integration": """
        SELECT integration_id, count(DISTINCT cost_date) AS days,
               round(sum(amount_usd), 2) AS usd
        FROM fct_costs GROUP BY ALL ORDER BY usd DESC""",
    "Top models": """
        SELECT model, round(sum(amount_usd), 2) AS usd FROM rollup_model_daily
        GROUP BY ALL ORDER BY usd DESC LIMIT 8""",
    "Input / output / cached split": """
        SELECT token_type, round(sum(amount_usd), 2) AS usd,
               round(100 * sum(amount_usd) / sum(sum(amount_usd)) OVER (), 1) AS pct
        FROM rollup_token_type_daily GROUP BY ALL ORDER BY usd DESC""",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, seconds: float, process: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"{name} exited early (code {process.returncode}); see its output")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise DemoError(f"{url} did not answer within {seconds:.0f} s")


def _demo_providers() -> list[str]:
    return list(dict.fromkeys(provider for _, _, provider, _ in DEMO_INTEGRATIONS))


def _start_emulator(
    provider: str, port: int, env: dict[str, str], extra: list[str] | None = None
) -> tuple[subprocess.Popen, str]:
    port = port or free_port()
    if _port_in_use(port):
        raise DemoError(
            f"port {port} is in use (another demo, or its emulator still running?): stop it, "
            "or pass --emulator-port"
        )
    command = [sys.executable, "-m", "grafient_pipeline.cli", "emulator", "--provider", provider]
    process = subprocess.Popen(
        [*command, "--port", str(port), *(extra or [])],
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    _wait_http(base_url, 30, process, f"the {provider} emulator")
    return process, base_url


def _start_emulators(
    settings: Settings, first_port: int, spike: object, processes: list[subprocess.Popen]
) -> dict[str, str]:
    """One emulator per provider of the demo; each provider's base URL setting points at it,
    so the integrations added next store it."""
    from grafient_pipeline.providers import get_provider

    urls = {}
    for number, name in enumerate(_demo_providers()):
        port = first_port + number if first_port else 0
        extra = _spike_arguments(spike) if name == "openai" else []
        emulator, base_url = _start_emulator(name, port, dagster_environment(settings), extra)
        processes.append(emulator)
        os.environ[get_provider(name).base_url_setting] = base_url
        print(f"   {get_provider(name).title}: {base_url}")
        urls[name] = base_url
    return urls


def _add_demo_integrations(settings: Settings) -> list[str]:
    import importlib

    from grafient_pipeline.providers import get_provider

    existing = {i.label: i.id for i in list_integrations(settings)}
    ids = []
    for label, plan, provider, org in DEMO_INTEGRATIONS:
        if label in existing:
            print(f"  {label}: already added as {existing[label]}")
            ids.append(existing[label])
            continue
        emulator = importlib.import_module(get_provider(provider).emulator_module)
        integration_id = add_integration(settings, label, plan, emulator.DEMO_ORGS[org], provider)
        print(f"  {label} ({provider}, {plan}): added as {integration_id}, Test Connection passed")
        ids.append(integration_id)
    return ids


def _backfill(settings: Settings, ids: list[str]) -> None:
    for integration_id in ids:
        summary = run_backfill(settings, integration_id, sys.stdout)
        print(describe_sync(summary))


def print_summary(settings: Settings) -> None:
    from grafient_pipeline.warehouse import connect

    with connect(settings.warehouse, read_only=True) as conn:
        for title, query in SUMMARY_SQL.items():
            cursor = conn.execute(query)
            print(f"\n{title}")
            print_table([d[0] for d in cursor.description], cursor.fetchall())


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    # Each child leads its own process group: signal the group, even if the leader has exited.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_hangup_and_term() -> None:
    """Closing the terminal or `kill` must stop the emulators and the UI too, not orphan them.
    Installed again before the UI: Dagster's in-process runs map SIGTERM to SIGINT's handler."""
    signal.signal(signal.SIGHUP, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_demo(settings: Settings, *, ui: bool, port: int, emulator_port: int) -> int:
    if ui and _port_in_use(port):
        raise DemoError(
            f"port {port} is in use (another Dagster UI or demo?): stop it, or pass --port"
        )
    # The demo's own runs stay in-process on its own instance, never in another running UI.
    os.environ["GRAFIENT_DAGSTER_URL"] = f"http://127.0.0.1:{port}"
    _stop_on_hangup_and_term()
    prepare_home(settings)
    processes: list[subprocess.Popen] = []
    receiver = None
    try:
        print("1. starting the providers' API emulators on 127.0.0.1")
        spike = _pick_spike()
        urls = _start_emulators(settings, emulator_port, spike, processes)
        print("2. adding the demo integrations (Test Connection first)")
        ids = _add_demo_integrations(settings)
        print("3. onboarding backfills (plan windows: Free 30 days, Pro 180 days)")
        _backfill(settings, ids)
        print("4. what the warehouse says")
        print_summary(settings)
        print("\n5. spend intelligence: a budget, the injected anomaly, alerts to a local webhook")
        receiver = _spend_intelligence(settings, ids, spike)
        if not ui:
            return 0
        return _serve_ui(settings, port, processes, ", ".join(urls.values()))
    finally:
        _stop(processes)
        if receiver is not None:
            receiver.shutdown()


def _pick_spike():
    from grafient_pipeline.demo_intelligence import pick_spike
    from grafient_pipeline.sync import utc_today

    return pick_spike(utc_today())


def _spike_arguments(spike) -> list[str]:
    from grafient_pipeline.demo_intelligence import spike_arguments

    return spike_arguments(spike)


def _spend_intelligence(settings: Settings, ids: list[str], spike):
    from grafient_pipeline.demo_intelligence import run

    return run(settings, ids, spike)


def write_workspace(settings: Settings) -> Path:
    path = settings.dagster_home / "workspace.yaml"
    if not path.exists() or path.read_text() != WORKSPACE_YAML:
        path.write_text(WORKSPACE_YAML)
    return path


def ui_command(workspace: Path, port: int) -> list[str]:
    """`dg dev` (Dagster's CLI for local development) on the workspace; warnings and errors only."""
    listen = ["-h", "127.0.0.1", "-p", str(port)]
    dg_dev = [sys.executable, "-m", "dagster_dg_cli.cli", "dev", "-w", str(workspace)]
    return [*dg_dev, *listen, "--log-level", "warning"]


DASHBOARD_PORT = 3001


def start_dashboard(settings: Settings, processes: list[subprocess.Popen]) -> str:
    """`grafient dashboard` next to the UI, on a fresh snapshot of the demo's warehouse."""
    from grafient_pipeline.snapshot import publish_snapshot

    publish_snapshot(settings.warehouse, settings.snapshot_path)
    port = DASHBOARD_PORT if not _port_in_use(DASHBOARD_PORT) else free_port()
    command = [sys.executable, "-m", "grafient_pipeline.cli", "dashboard", "--port", str(port)]
    process = subprocess.Popen(
        command, env=dagster_environment(settings), stdout=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    processes.append(process)
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/healthz", 60, process, "grafient dashboard")
    return url


def _serve_ui(
    settings: Settings, port: int, processes: list[subprocess.Popen], emulator_url: str
) -> int:
    _stop_on_hangup_and_term()
    process = subprocess.Popen(
        ui_command(write_workspace(settings), port),
        env=dagster_environment(settings),
        cwd=settings.home,  # not the caller's folder: nothing there is imported
        start_new_session=True,
    )
    processes.append(process)
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/server_info", 120, process, "dg dev")
    print(
        f"\n6. Dagster UI: {url}/asset-groups  (assets, partitions, runs; Ctrl-C stops everything)"
    )
    print(f"   Dashboard:  {start_dashboard(settings, processes)}  (spend, integrations)")
    print(f'   query the warehouse: GRAFIENT_HOME={settings.home} grafient sql "SELECT ..."')
    print(f"   the emulators keep running at {emulator_url} while the UI is up")
    try:
        while process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping the UI and the emulators")
        return 0
    raise DemoError(f"dg dev exited on its own (code {process.returncode}); see its output")
