"""A local, faithful emulator of the OpenAI Admin Costs API (``GET /v1/organization/costs``).

It serves real HTTP (default 127.0.0.1) and behaves like the real endpoint described in
``reference/openai-costs-api.md``, not like a client would like it to: both array encodings,
bucket pagination with an opaque cursor, partial buckets, empty days, nulls for ungrouped
dimensions, amounts with up to 16 decimals (some in exponent notation), OpenAI-style errors, and
switchable faults (:class:`Faults`). Standard library only; it must not import dagster.

Data model
    Each (seed, org_id, UTC day) has a deterministic set of *leaves*: cost rows unique by
    (line_item, project_id, api_key_id), exactly ``results_per_day`` of them, except that about
    one day in ten has no spend at all. Each leaf is charged at one instant, second 3599 of its
    ``hour`` (0..23). Data never depends on the query.

Partial-bucket rule (also used by :meth:`CostsEmulator.expected_totals`)
    A bucket ``[s, e)`` of UTC day D holds exactly the leaves of D whose charge instant
    ``D 00:00:00 + 3600*hour + 3599`` lies in ``[s, e)``; with s and e in seconds since D's
    midnight that is ``s // 3600 <= hour < e // 3600``. So today's bucket (which ends at now)
    holds the leaves with ``hour < now.hour``, and an unaligned ``start_time`` at hh:mm gives a
    first bucket holding the leaves with ``hour >= hh``.

Grouping
    Filters (``project_ids``, ``api_key_ids``) select leaves first; then leaves are summed
    exactly per requested ``group_by`` dimensions; ungrouped dimensions are ``null``. Without
    ``line_item`` in ``group_by``, ``quantity`` and ``quantity_unit`` are ``null`` (mixed units).

The data side lives in :mod:`grafient_pipeline.openai.emulator_data`, the request side (errors,
query parsing, auth messages, responses) in :mod:`grafient_pipeline.openai.emulator_protocol`;
this module holds the fault switches, :class:`CostsEmulator`, the HTTP server and the command line.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import secrets
import signal
import socket
import sys
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from grafient_pipeline.openai.emulator_data import (
    EMPTY_DAY_RATE,
    LINE_ITEMS,
    SCALE,
    Day,
    LeafBodies,
    Shape,
    Universe,
    amount_text,
    base_units,
    generate_day,
    grouped_fragment,
    j,
    leaf_fragment,
    leaf_row,
    result_head,
    scale_units,
    units_to_decimal,
)
from grafient_pipeline.openai.emulator_protocol import (
    COSTS_PATH,
    DAY,
    DEFAULT_LIMIT,
    DEMO_ORGS,
    GROUP_DIMS,
    MALFORMED,
    MAX_LIMIT,
    MISSING_SCOPES,
    NO_KEY,
    ApiError,
    Query,
    Response,
    bad,
    bad_key,
    bucket_spans,
    check_orgs,
    coalesce,
    day_start,
    iso,
    parse_query,
    server_error,
)

__all__ = [
    "CACHE_MAX_BYTES",
    "COSTS_PATH",
    "DAY",
    "DAY_CACHE_MAX",
    "DEFAULT_LIMIT",
    "DEMO_ORGS",
    "EMPTY_DAY_RATE",
    "GROUP_DIMS",
    "LINE_ITEMS",
    "MAX_LIMIT",
    "SCALE",
    "ApiError",
    "CostsEmulator",
    "Faults",
    "add_emulator_arguments",
    "amount_text",
    "main",
    "parse_query",
    "run_from_args",
]

CACHE_MAX_BYTES = 3 * 2**30
DAY_CACHE_MAX = 1024


# --------------------------------------------------------------------------- faults


@dataclass
class Faults:
    """Fault switches; mutable at runtime (``emulator.faults.rate_limit_first = 2``).

    The ``*_first`` counters mean "the next K eligible requests, counted from when the field was
    last assigned". They are consumed in this order: 429, then 5xx (both for any request), then
    malformed, then truncated (both only for answers that would otherwise be a 200).
    ``rate_limit_every=N`` answers 429 to every request whose ``request_count`` is a multiple of N.
    A 502 comes back as a Cloudflare-style HTML page; 500/503 as OpenAI JSON errors.
    ``truncated_first`` sends the headers with the full Content-Length, half the body, then closes
    the connection. Shape quirks: ``amounts_as_strings`` quotes the same exact amount text;
    ``extra_keys`` adds ``organization_id`` (and a few more) to page, buckets and results;
    ``legacy_shape`` omits ``api_key_id``, ``quantity`` and ``quantity_unit`` and, like the old
    API, ignores ``group_by=api_key_id`` (amounts are then summed over keys).
    """

    rate_limit_first: int = 0
    rate_limit_every: int = 0
    retry_after: str | None = "1"
    server_error_first: int = 0
    server_error_status: int = 500
    slow_seconds: float = 0.0
    malformed_first: int = 0
    truncated_first: int = 0
    amounts_as_strings: bool = False
    extra_keys: bool = False
    legacy_shape: bool = False
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


class CostsEmulator:
    """The emulated endpoint over real HTTP; see the module docstring for the data rules."""

    def __init__(
        self,
        orgs: dict[str, str] | None = None,
        *,
        seed: int = 0,
        results_per_day: int = 40,
        port: int = 0,
        host: str = "127.0.0.1",
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.orgs: dict[str, str] = dict(DEMO_ORGS if orgs is None else orgs)
        check_orgs(self.orgs)
        if results_per_day < 0:
            raise ValueError("results_per_day must be >= 0")
        self.seed, self.results_per_day, self.port, self.host = seed, results_per_day, port, host
        self._now = now or (lambda: datetime.now(UTC))
        self.faults = Faults()
        self.base_url = ""
        self.request_count = 0
        self._key_org = {key: org for org, key in self.orgs.items()}
        self._revoked: set[str] = set()
        self._restated: dict[tuple[str, date], list[Decimal]] = {}
        self._lock = threading.RLock()
        self._universes: dict[str, Universe] = {}
        self._days: OrderedDict[tuple[str, date], Day] = OrderedDict()
        self._frags: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._frag_bytes = 0
        self._leaf_caches: dict[tuple[str, Shape], tuple[list[bytes], LeafBodies]] = {}
        self._secret = hashlib.sha256(f"grafient-emulator-cursor|{seed}".encode()).digest()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> CostsEmulator:
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

    def __enter__(self) -> CostsEmulator:
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

    # ---------------------------------------------------------------- test controls

    def revoke_key(self, key: str) -> None:
        with self._lock:
            self._revoked.add(key)

    def restate_day(self, org_id: str, day: date, factor: Decimal) -> None:
        """Multiply each leaf amount of that day by ``factor``, rounded half-even to 1e-16."""
        self._check_org(org_id)
        factor = Decimal(factor)
        if not factor.is_finite():
            raise ValueError("factor must be a finite Decimal")
        with self._lock:
            self._restated.setdefault((org_id, day), []).append(factor)
            self._days.pop((org_id, day), None)
            for key in [k for k in self._frags if k[0] == org_id and k[1] == day]:
                self._frag_bytes -= len(self._frags.pop(key))

    def expected_totals(self, org_id: str, start: date, end: date) -> dict[date, Decimal]:
        """Per UTC day in ``[start, end]`` (end inclusive), the sum of all results as served now.

        Days from today's midnight on that are not yet started are absent; today holds only the
        leaves with ``hour < now.hour``; empty days are ``Decimal(0)``.
        """
        return {d: units_to_decimal(u) for d, u in self._expected_units(org_id, start, end).items()}

    def expected_total(self, org_id: str, start: date, end: date) -> Decimal:
        return units_to_decimal(sum(self._expected_units(org_id, start, end).values()))

    def results_for_day(self, org_id: str, day: date) -> list[dict[str, Any]]:
        """The leaf rows of a whole day (ignoring the partial-today rule), with their ``hour``."""
        self._check_org(org_id)
        with self._lock:
            uni, d = self._universe(org_id), self._day(org_id, day)
            units = d.leaf_units()
        return [
            leaf_row(uni, k, bk, u, h)
            for k, bk, u, h in zip(d.keys, d.bkeys, units, d.hours, strict=True)
        ]

    def _expected_units(self, org_id: str, start: date, end: date) -> dict[date, int]:
        self._check_org(org_id)
        now_ts = self._now_ts()
        out: dict[date, int] = {}
        day = start
        while day <= end and day_start(day) < now_ts:
            hours = min(24, (now_ts - day_start(day)) // 3600)
            with self._lock:
                d = self._day(org_id, day)
                units = d.leaf_units()
            out[day] = sum(u for u, h in zip(units, d.hours, strict=True) if h < hours)
            day += timedelta(days=1)
        return out

    # ---------------------------------------------------------------- data

    def _check_org(self, org_id: str) -> None:
        if org_id not in self.orgs:
            raise KeyError(f"unknown organization {org_id!r}")

    def _now_ts(self) -> int:
        now = self._now()
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        return int(now.timestamp())

    def _universe(self, org: str) -> Universe:
        uni = self._universes.get(org)
        if uni is None:
            uni = self._universes[org] = Universe.build(self.seed, org, self.results_per_day)
        return uni

    def _day(self, org: str, day: date) -> Day:
        key = (org, day)
        d = self._days.get(key)
        if d is not None:
            self._days.move_to_end(key)
            return d
        d = generate_day(self.seed, org, day, self._universe(org), self.results_per_day)
        for factor in self._restated.get(key, ()):
            d.units = [scale_units(u, factor) for u in d.leaf_units()]
        self._days[key] = d
        if len(self._days) > DAY_CACHE_MAX:
            self._days.popitem(last=False)
        return d

    def _fragment(
        self, org: str, day: date, hours: tuple[int, int], shape: Shape, q: Query
    ) -> bytes:
        version = len(self._restated.get((org, day), ()))
        key = (org, day, hours, shape, q.project_ids, q.api_key_ids, version)
        with self._lock:
            frag = self._frags.get(key)
            if frag is not None:
                self._frags.move_to_end(key)
                return frag
            frag = self._build_fragment(org, day, hours, shape, q)
            self._frags[key] = frag
            self._frag_bytes += len(frag)
            while self._frag_bytes > CACHE_MAX_BYTES and len(self._frags) > 1:
                self._frag_bytes -= len(self._frags.popitem(last=False)[1])
        return frag

    def _build_fragment(
        self, org: str, day: date, hours: tuple[int, int], shape: Shape, q: Query
    ) -> bytes:
        uni, d = self._universe(org), self._day(org, day)
        keys, bkeys, units = _select(d, uni, hours, q)
        if shape.per_leaf and units is None:
            heads, bodies = self._leaf_cache(org, shape)
            return leaf_fragment(keys, bkeys, heads, bodies)
        if units is None:
            units = [base_units(b) for b in bkeys]
        return grouped_fragment(shape, org, uni, keys, bkeys, units)

    def _leaf_cache(self, org: str, shape: Shape) -> tuple[list[bytes], LeafBodies]:
        cache = self._leaf_caches.get((org, shape))
        if cache is None:
            uni = self._universe(org)
            heads = [
                result_head(shape, org, uni.projects[k // uni.per_project], key).encode()
                for k, key in enumerate(uni.keys)
            ]
            cache = self._leaf_caches[(org, shape)] = (heads, LeafBodies(shape))
        return cache

    # ---------------------------------------------------------------- requests

    def handle(self, method: str, target: str, authorization: str | None) -> Response:
        """Answer one HTTP request (used by the HTTP handler; callable directly in tests)."""
        with self._lock:
            self.request_count += 1
            number, faults = self.request_count, self.faults
        if faults.slow_seconds > 0:
            time.sleep(faults.slow_seconds)
        with self._lock:
            fault = _transport_fault(number, faults)
        if fault is not None:
            return fault
        try:
            org = self._authenticate(method, target, authorization)
            response = self._page(org, parse_query(urlsplit(target).query), self._now_ts())
        except ApiError as err:
            return Response.error(err)
        with self._lock:
            if faults.take("malformed_first"):
                response.chunks = [MALFORMED]
            elif faults.take("truncated_first"):
                response.truncate = True
        return response

    def _authenticate(self, method: str, target: str, authorization: str | None) -> str:
        path = urlsplit(target).path
        if method != "GET" or path != COSTS_PATH:
            raise ApiError(404, f"Invalid URL ({method} {path})")
        scheme, _, key = (authorization or "").strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, NO_KEY)
        if key.startswith("sk-") and not key.startswith("sk-admin-"):
            raise ApiError(403, MISSING_SCOPES)
        with self._lock:
            org = None if key in self._revoked else self._key_org.get(key)
        if org is None:
            raise ApiError(401, bad_key(key), code="invalid_api_key")
        return org

    def _shape(self, group_by: frozenset[str]) -> Shape:
        f = self.faults
        return Shape(
            "line_item" in group_by,
            "project_id" in group_by,
            "api_key_id" in group_by and not f.legacy_shape,
            f.amounts_as_strings,
            f.extra_keys,
            f.legacy_shape,
        )

    def _page(self, org: str, q: Query, now_ts: int) -> Response:
        fingerprint = q.fingerprint(org)
        start = q.start if q.page is None else self._decode_cursor(q.page, fingerprint)
        spans, has_more = bucket_spans(start, q.end, q.limit, now_ts)
        shape = self._shape(q.group_by)
        extra = f',"organization_id":{j(org)}' if shape.extra else ""
        chunks = [f'{{"object":"page"{extra},"data":['.encode()]
        for i, (s, e) in enumerate(spans):
            chunks.append(self._bucket_head(org, s, e, shape, first=i == 0))
            chunks.append(self._span_fragment(org, s, e, shape, q))
            chunks.append(b"]}")
        next_page = self._encode_cursor(spans[-1][1], fingerprint) if has_more else None
        more = "true" if has_more else "false"
        chunks.append(f'],"has_more":{more},"next_page":{j(next_page)}}}'.encode())
        headers = {"openai-organization": org, "openai-version": "2020-10-01"}
        return Response(200, chunks, headers)

    def _span_fragment(self, org: str, s: int, e: int, shape: Shape, q: Query) -> bytes:
        d0 = s - s % DAY
        day = date(1970, 1, 1) + timedelta(days=d0 // DAY)
        return self._fragment(org, day, ((s - d0) // 3600, (e - d0) // 3600), shape, q)

    @staticmethod
    def _bucket_head(org: str, s: int, e: int, shape: Shape, first: bool) -> bytes:
        head = f'{"" if first else ","}{{"object":"bucket","start_time":{s},"end_time":{e}'
        if shape.extra:
            head += f',"organization_id":{j(org)},"start_time_iso":"{iso(s)}"'
            head += f',"end_time_iso":"{iso(e)}"'
        return (head + ',"results":[').encode()

    def _encode_cursor(self, next_start: int, fingerprint: str) -> str:
        payload = f"{next_start}.{fingerprint}"
        mac = hmac.new(self._secret, payload.encode(), "sha256").hexdigest()[:16]
        raw = base64.urlsafe_b64encode(f"{payload}.{mac}".encode()).decode().rstrip("=")
        return "page_" + raw

    def _decode_cursor(self, page: str, fingerprint: str) -> int:
        invalid = bad("page", f"Invalid value for 'page': {page!r} is not a valid cursor.")
        if not page.startswith("page_"):
            raise invalid
        raw = page.removeprefix("page_")
        try:
            text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
            next_start, fp, mac = text.split(".")
        except ValueError:
            raise invalid from None
        good = hmac.new(self._secret, f"{next_start}.{fp}".encode(), "sha256").hexdigest()[:16]
        if not hmac.compare_digest(mac, good) or not next_start.isdigit():
            raise invalid
        if fp != fingerprint:
            raise bad("page", "Invalid value for 'page': the cursor belongs to a different query.")
        return int(next_start)


def _select(
    d: Day, uni: Universe, hours: tuple[int, int], q: Query
) -> tuple[array, array, list[int] | None]:
    """The leaves of a bucket: in its hour range and passing the filters."""
    pids, kids = q.project_ids, q.api_key_ids
    if pids is None and kids is None and hours == (0, 24):
        return d.keys, d.bkeys, d.units
    pset = None if pids is None else {i for i, p in enumerate(uni.projects) if p in pids}
    kset = None if kids is None else {i for i, k in enumerate(uni.keys) if k in kids}
    h0, h1, per = hours[0], hours[1], uni.per_project
    idx = [
        i
        for i, (k, h) in enumerate(zip(d.keys, d.hours, strict=True))
        if h0 <= h < h1 and (pset is None or k // per in pset) and (kset is None or k in kset)
    ]
    units = None if d.units is None else [d.units[i] for i in idx]
    return array("i", [d.keys[i] for i in idx]), array("i", [d.bkeys[i] for i in idx]), units


def _transport_fault(number: int, faults: Faults) -> Response | None:
    every = faults.rate_limit_every
    if faults.take("rate_limit_first") or (every > 0 and number % every == 0):
        headers = {} if faults.retry_after is None else {"Retry-After": faults.retry_after}
        err = ApiError(
            429,
            "Rate limit reached for requests. Please try again later.",
            code="rate_limit_exceeded",
            type_="requests",
        )
        return Response.error(err, headers)
    if faults.take("server_error_first"):
        return server_error(faults.server_error_status)
    return None


# --------------------------------------------------------------------------- HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], emulator: CostsEmulator) -> None:
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
        self.send_header("x-request-id", "req_" + secrets.token_hex(16))
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
        response = self.server.emulator.handle(
            self.command, self.path, self.headers.get("Authorization")
        )
        self._write(response, started)

    def _write(self, response: Response, started: float) -> None:
        total = sum(map(len, response.chunks))
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(total))
        self.send_header("openai-processing-ms", str(int((time.perf_counter() - started) * 1000)))
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


def _org_arg(text: str) -> tuple[str, str]:
    org, sep, key = text.partition("=")
    if not sep or not org.strip() or not key.strip().startswith("sk-admin-"):
        raise argparse.ArgumentTypeError("expected ORG_ID=KEY with an sk-admin- key")
    return org.strip(), key.strip()


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the emulator command (``grafient emulator`` and ``python -m ...emulator``)."""
    parser.add_argument("--port", type=int, default=8787, help="TCP port (0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument(
        "--org",
        action="append",
        type=_org_arg,
        metavar="ORG_ID=KEY",
        help="an organization and its sk-admin- key (repeatable; default: two demo orgs)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument(
        "--results-per-day", type=_non_negative, default=40, help="cost rows per day"
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


def _print_banner(emulator: CostsEmulator) -> None:
    lines = [
        "Grafient OpenAI Costs API emulator",
        f"Base URL: {emulator.base_url}",
        f"  export GRAFIENT_OPENAI_BASE_URL={emulator.base_url}",
        "Organizations and their (demo) admin keys:",
        *(f"  {org}  {key}" for org, key in emulator.orgs.items()),
        "Serving GET /v1/organization/costs until Ctrl-C.",
    ]
    print("\n".join(lines), flush=True)


def run_from_args(args: argparse.Namespace) -> int:
    """Start the emulator, print its base URL and keys, serve until Ctrl-C or SIGTERM."""
    orgs = dict(args.org) if args.org else None
    try:
        emulator = CostsEmulator(
            orgs,
            seed=args.seed,
            results_per_day=args.results_per_day,
            port=args.port,
            host=args.host,
        )
        for org, day, factor in getattr(args, "spike", None) or ():
            emulator.restate_day(org, day, factor)
        emulator.start()
    except (OSError, ValueError, KeyError) as exc:
        print(f"emulator: cannot start on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    restore = _install_sigterm(stop)
    try:
        _print_banner(emulator)
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        restore()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafient_pipeline.openai.emulator")
    add_emulator_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
