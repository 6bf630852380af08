"""What every provider's API emulator shares: the HTTP server, the fault switches, paging helpers
and the command line.

A provider's emulator subclasses :class:`HttpEmulator` and implements ``answer`` (one request in,
one :class:`Response` out), usually through :meth:`HttpEmulator.with_faults`, which applies the
shared fault switches (:class:`FaultSwitches`) around the provider's own answer. Standard library
only; it must not import dagster.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl

DAY = 86_400
E = TypeVar("E", bound="HttpEmulator")


def day_start(day: date) -> int:
    return (day - date(1970, 1, 1)).days * DAY


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def demo_key(prefix: str, org_id: str) -> str:
    """A deterministic demo admin key for an organization: ``<prefix>demo-<org>-<digest>``."""
    digest = hashlib.sha256(f"grafient-demo|{org_id}".encode()).hexdigest()[:32]
    return f"{prefix}demo-{org_id.removeprefix('org-')}-{digest}"


# --------------------------------------------------------------------------- answers


class EmulatedError(Exception):
    """An error answer; a provider's subclass renders its own body shape."""

    status: int

    def body(self) -> bytes:
        raise NotImplementedError


@dataclass
class Response:
    status: int
    chunks: list[bytes]
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False
    content_type: str = "application/json"

    @classmethod
    def error(cls, err: EmulatedError, headers: dict[str, str] | None = None) -> Response:
        return cls(err.status, [err.body()], headers or {})


HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


def coalesce(chunks: list[bytes], size: int = 1 << 20) -> Iterable[bytes]:
    """Merge small chunks into writes of about ``size`` bytes; big chunks pass through."""
    pending: list[bytes] = []
    pending_len = 0
    for chunk in chunks:
        if len(chunk) >= size:
            if pending:
                yield b"".join(pending)
                pending, pending_len = [], 0
            yield chunk
            continue
        pending.append(chunk)
        pending_len += len(chunk)
        if pending_len >= size:
            yield b"".join(pending)
            pending, pending_len = [], 0
    if pending:
        yield b"".join(pending)


# --------------------------------------------------------------------------- requests


def collect_params(
    query: str, array_params: Iterable[str]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Scalars (last one wins) and arrays (``name`` or ``name[]``, repeatable) of a query."""
    arrays_wanted = frozenset(array_params)
    scalars: dict[str, str] = {}
    arrays: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        base = name.removesuffix("[]")
        if base in arrays_wanted:
            arrays.setdefault(base, []).append(value)
        elif name == base:
            scalars[name] = value
    return scalars, arrays


def int_param(
    scalars: Mapping[str, str],
    name: str,
    low: int,
    high: int,
    error: Callable[[str, str], Exception],
) -> int | None:
    """An integer parameter within ``low..high``, or None when absent; ``error(param, message)``
    builds the provider's 400."""
    raw = scalars.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"-?[0-9]+", raw.strip()):
        raise error(name, f"Invalid value for '{name}': {raw!r} is not an integer.")
    value = int(raw.strip())
    if not low <= value <= high:
        raise error(name, f"Invalid value for '{name}': must be between {low} and {high}.")
    return value


def list_page(
    items: list[dict[str, Any]], after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool] | None:
    """One page of an id-ordered list after the object ``after`` (None: from the start), and
    whether more follow; None when ``after`` is not an id of the list."""
    ids = [item["id"] for item in items]
    if after is None:
        start = 0
    elif after in ids:
        start = ids.index(after) + 1
    else:
        return None
    page = items[start : start + limit]
    return page, start + limit < len(items)


def list_body(page: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


class Cursors:
    """Opaque, signed page cursors: a position and the fingerprint of the query it belongs to."""

    def __init__(self, seed: int, prefix: str = "page_") -> None:
        self._secret = hashlib.sha256(f"grafient-emulator-cursor|{seed}".encode()).digest()
        self._prefix = prefix

    def encode(self, next_start: int, fingerprint: str) -> str:
        payload = f"{next_start}.{fingerprint}"
        mac = hmac.new(self._secret, payload.encode(), "sha256").hexdigest()[:16]
        raw = base64.urlsafe_b64encode(f"{payload}.{mac}".encode()).decode().rstrip("=")
        return self._prefix + raw

    def decode(self, page: str, fingerprint: str) -> int:
        """The position; raises KeyError for a cursor of another query, ValueError for one
        that is not a cursor."""
        if not page.startswith(self._prefix):
            raise ValueError(page)
        raw = page.removeprefix(self._prefix)
        try:
            text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
            next_start, fp, mac = text.split(".")
        except ValueError:
            raise ValueError(page) from None
        good = hmac.new(self._secret, f"{next_start}.{fp}".encode(), "sha256").hexdigest()[:16]
        if not hmac.compare_digest(mac, good) or not next_start.isdigit():
            raise ValueError(page)
        if fp != fingerprint:
            raise KeyError(page)
        return int(next_start)


# --------------------------------------------------------------------------- faults


@dataclass
class FaultSwitches:
    """Fault switches; mutable at runtime (``emulator.faults.rate_limit_first = 2``).

    The ``*_first`` counters mean "the next K eligible requests, counted from when the field was
    last assigned". They are consumed in this order: 429, then 5xx (both for any request), then
    malformed, then truncated (both only for answers that would otherwise be a 200).
    ``rate_limit_every=N`` answers 429 to every request whose ``request_count`` is a multiple of N.
    ``truncated_first`` sends the headers with the full Content-Length, half the body, then closes
    the connection. ``slow_seconds`` delays every answer.
    """

    rate_limit_first: int = 0
    rate_limit_every: int = 0
    retry_after: str | None = "1"
    server_error_first: int = 0
    server_error_status: int = 500
    slow_seconds: float = 0.0
    malformed_first: int = 0
    truncated_first: int = 0
    _fired: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        fired = self.__dict__.get("_fired")
        if fired is not None and name.endswith("_first"):
            fired[name] = 0

    def take(self, name: str) -> bool:
        """Consume one firing of the ``*_first`` fault ``name``; True if it fires now."""
        done = self._fired.get(name, 0)
        if done >= getattr(self, name):
            return False
        self._fired[name] = done + 1
        return True


# --------------------------------------------------------------------------- emulator


class HttpEmulator:
    """An emulated API over real HTTP (default 127.0.0.1): lifecycle, connection tracking and the
    fault plumbing. Subclasses implement ``answer`` and the fault answers."""

    request_id_header: ClassVar[str] = "x-request-id"
    processing_header: ClassVar[str | None] = None  # e.g. "openai-processing-ms"
    malformed_body: ClassVar[bytes] = b'{"data":[{"results":[{]}'

    def __init__(self, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self.port, self.host = port, host
        self.faults: FaultSwitches = FaultSwitches()
        self.base_url = ""
        self.request_count = 0
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # ---------------------------------------------------------------- lifecycle

    def start(self: E) -> E:
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), self)
        self._server = server
        shown = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        self.base_url = f"http://{shown}:{server.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self: E) -> E:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _track(self, conn: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # ---------------------------------------------------------------- requests

    def answer(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        """One HTTP request's answer (the server calls it on its threads)."""
        raise NotImplementedError

    def rate_limited(self, headers: dict[str, str]) -> Response:
        """The provider's 429 answer, with these headers."""
        raise NotImplementedError

    def server_error(self, status: int) -> Response:
        """The provider's answer for a 5xx fault."""
        raise NotImplementedError

    def with_faults(self, ok: Callable[[], Response]) -> Response:
        """Count the request and apply the fault switches around ``ok()`` (the real answer,
        which may raise an EmulatedError)."""
        with self._lock:
            self.request_count += 1
            number, faults = self.request_count, self.faults
        if faults.slow_seconds > 0:
            time.sleep(faults.slow_seconds)
        with self._lock:
            fault = self._transport_fault(number, faults)
        if fault is not None:
            return fault
        try:
            response = ok()
        except EmulatedError as err:
            return Response.error(err)
        with self._lock:
            if faults.take("malformed_first"):
                response.chunks = [self.malformed_body]
            elif faults.take("truncated_first"):
                response.truncate = True
        return response

    def _transport_fault(self, number: int, faults: FaultSwitches) -> Response | None:
        every = faults.rate_limit_every
        if faults.take("rate_limit_first") or (every > 0 and number % every == 0):
            return self.rate_limited(
                {} if faults.retry_after is None else {"Retry-After": faults.retry_after}
            )
        if faults.take("server_error_first"):
            if faults.server_error_status == 502:
                return Response(502, [HTML_502], content_type="text/html")
            return self.server_error(faults.server_error_status)
        return None


# --------------------------------------------------------------------------- HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], emulator: HttpEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Dropped connections are normal here (faults, clients going away): stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloudflare"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emulator._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._track(self.connection, False)

    def end_headers(self) -> None:
        self.send_header(self.server.emulator.request_id_header, "req_" + secrets.token_hex(16))
        super().end_headers()

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr log."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        started = time.perf_counter()
        response = self.server.emulator.answer(self.command, self.path, self.headers)
        self._write(response, started)

    def _write(self, response: Response, started: float) -> None:
        total = sum(map(len, response.chunks))
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(total))
        processing = self.server.emulator.processing_header
        if processing:
            self.send_header(processing, str(int((time.perf_counter() - started) * 1000)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if response.truncate:
            self.wfile.write(b"".join(response.chunks)[: total // 2])
            self.close_connection = True
            return
        for piece in coalesce(response.chunks):
            self.wfile.write(piece)


# --------------------------------------------------------------------------- command line


def org_key_arg(prefix: str) -> Callable[[str], tuple[str, str]]:
    """The argparse type of ``--org ORG_ID=KEY`` for keys starting with ``prefix``."""

    def parse(text: str) -> tuple[str, str]:
        org, sep, key = text.partition("=")
        if not sep or not org.strip() or not key.strip().startswith(prefix):
            raise argparse.ArgumentTypeError(f"expected ORG_ID=KEY with an {prefix} key")
        return org.strip(), key.strip()

    return parse


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def add_common_arguments(
    parser: argparse.ArgumentParser, *, key_prefix: str, port: int, results_per_day: int
) -> None:
    """The options every emulator command has."""
    parser.add_argument("--port", type=int, default=port, help="TCP port (0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument(
        "--org",
        action="append",
        type=org_key_arg(key_prefix),
        metavar="ORG_ID=KEY",
        help=f"an organization and its {key_prefix} key (repeatable; default: the demo orgs)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument(
        "--results-per-day", type=_non_negative, default=results_per_day, help="cost rows per day"
    )
    parser.add_argument(
        "--spike",
        action="append",
        type=_spike_arg,
        metavar="ORG_ID:YYYY-MM-DD:FACTOR",
        help="multiply that organization's spend on that day (an anomaly to find; repeatable)",
    )


def _spike_arg(text: str) -> tuple[str, date, Decimal]:
    try:
        org, day, factor = text.rsplit(":", 2)
        return org, date.fromisoformat(day), Decimal(factor)
    except (ValueError, ArithmeticError):
        raise argparse.ArgumentTypeError("expected ORG_ID:YYYY-MM-DD:FACTOR") from None


def _install_sigterm(stop: threading.Event) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return lambda: signal.signal(signal.SIGTERM, previous)


def banner(emulator: Any, title: str, base_url_setting: str, serving: str) -> list[str]:
    """What an emulator command prints once it listens: base URL, the export line, its keys."""
    return [
        f"Grafient {title} emulator",
        f"Base URL: {emulator.base_url}",
        f"  export {base_url_setting}={emulator.base_url}",
        "Organizations and their (demo) admin keys:",
        *(f"  {org}  {key}" for org, key in emulator.orgs.items()),
        f"Serving {serving} until Ctrl-C.",
    ]


def run_emulator(
    args: argparse.Namespace, emulator_class: Callable[..., HttpEmulator], lines: list[str]
) -> int:
    """Build ``emulator_class(orgs, seed=, results_per_day=, port=, host=)`` from the parsed
    options, print the banner (``lines``: title, base URL setting, what it serves), serve
    until Ctrl-C or SIGTERM; 1 when it cannot start."""
    orgs = dict(args.org) if args.org else None

    def build() -> HttpEmulator:
        emulator = emulator_class(
            orgs,
            seed=args.seed,
            results_per_day=args.results_per_day,
            port=args.port,
            host=args.host,
        )
        for org, day, factor in getattr(args, "spike", None) or ():
            emulator.restate_day(org, day, factor)
        return emulator

    return serve_until_stopped(args, build, lambda emulator: banner(emulator, *lines))


def command_main(
    module: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
) -> int:
    """``python -m <module>``: parse the emulator's options and run it."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def serve_until_stopped(
    args: argparse.Namespace,
    build: Callable[[], HttpEmulator],
    banner: Callable[[Any], list[str]],
) -> int:
    """Start the emulator ``build()`` makes, print ``banner(emulator)``, serve until Ctrl-C or
    SIGTERM; 1 when it cannot start."""
    try:
        emulator = build().start()
    except (OSError, ValueError) as exc:
        print(f"emulator: cannot start on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    restore = _install_sigterm(stop)
    try:
        print("\n".join(banner(emulator)), flush=True)
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        restore()
    return 0
