"""`grafient dashboard [--host 127.0.0.1] [--port 3001]`: serve the Dashboard and Integrations."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from grafient_pipeline.operations import OperationError
from grafient_pipeline.settings import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3001


def add_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "dashboard",
        help="the Dashboard and Integrations pages in your browser",
        description="Serve the Dashboard (spend, charts, top models/projects/keys) and the "
        "Integrations page (add, Test Connection, Force Sync) on this machine.",
        epilog="example:\n  grafient dashboard --port 3001\n\n"
        "On an address other than 127.0.0.1 set GRAFIENT_DASHBOARD_TOKEN (a long random\n"
        "secret): the pages then ask for it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"the address to listen on (default {DEFAULT_HOST}: this machine only)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, metavar="PORT",
        help=f"the port (default {DEFAULT_PORT})",
    )  # fmt: skip
    parser.set_defaults(handler=cmd_dashboard)


def listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as error:
        sock.close()
        reason = (error.strerror or str(error)).lower()
        raise OperationError(
            f"cannot listen on {host}:{port} ({reason}): stop what uses it, or pass --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def cmd_dashboard(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.dashboard.reader import publish_if_missing
    from grafient_pipeline.dashboard.security import TOKEN_ENV, check_bind

    token = os.environ.get(TOKEN_ENV) or None
    check_bind(args.host, token)
    sock = listen_socket(args.host, args.port)
    note = publish_if_missing(settings.warehouse, settings.snapshot_path)
    if note:
        print(f"grafient dashboard: {note}", file=sys.stderr)
    print(f"Grafient dashboard: {url_of(args.host, args.port)}  (Ctrl-C stops it)", flush=True)
    serve(settings, sock, token)
    return 0


def serve(settings: Settings, sock: socket.socket, token: str | None) -> None:
    import uvicorn

    from grafient_pipeline.dashboard.app import create_app
    from grafient_pipeline.dashboard.jobs import JobRunner

    jobs = JobRunner()
    app = create_app(settings, token=token, jobs=jobs)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, server_header=False, proxy_headers=False,
        timeout_graceful_shutdown=5,
    )  # fmt: skip
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        jobs.stop()
        sock.close()
