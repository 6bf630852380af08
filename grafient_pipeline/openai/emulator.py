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
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

SCALE = 10**16  # amounts are integers of 1e-16 USD
DAY = 86_400
COSTS_PATH = "/v1/organization/costs"
GROUP_DIMS = ("project_id", "line_item", "api_key_id")
MAX_LIMIT = 180
DEFAULT_LIMIT = 7
EMPTY_DAY_RATE = 0.1
CACHE_MAX_BYTES = 3 * 2**30
DAY_CACHE_MAX = 1024
_QBITS = 12  # quantity table size 4096 per unit
_MAX_TS = 2**33


def _demo_key(org_id: str) -> str:
    digest = hashlib.sha256(f"grafient-demo|{org_id}".encode()).hexdigest()[:32]
    return f"sk-admin-demo-{org_id.removeprefix('org-')}-{digest}"


DEMO_ORGS: dict[str, str] = {o: _demo_key(o) for o in ("org-acme-prod", "org-acme-research")}

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


# --------------------------------------------------------------------------- catalogue

_UNITS: dict[str | None, tuple[int, int, int]] = {  # unit -> (low, high, scale of the quantity)
    "tokens": (1, 20_000_000, 1),
    "1000_tokens": (1, 40_000, 1),
    "images": (1, 800, 1),
    "duration_seconds": (1, 200_000, 1),
    "duration_minutes": (1, 4_000, 1),
    "duration_hours": (1, 300, 1),
    "characters": (20, 3_000_000, 1),
    "gibibyte_hours": (1, 400_000, 10),  # tenths: quantity like 1234.5
    None: (1, 20_000, 1),  # tool calls: a count with quantity_unit null
}

_CATALOGUE: tuple[tuple[str, str | None, str], ...] = (  # line_item, quantity_unit, USD per unit
    ("gpt-4o-mini-2024-07-18, input", "tokens", "0.00000015"),
    ("gpt-4o-mini-2024-07-18, output", "tokens", "0.0000006"),
    ("gpt-4o-mini-2024-07-18, cached input", "tokens", "0.000000075"),
    ("gpt-4o-2024-08-06, input", "tokens", "0.0000025"),
    ("gpt-4o-2024-08-06, output", "tokens", "0.00001"),
    ("gpt-4o-2024-08-06, cached input", "tokens", "0.00000125"),
    ("gpt-4o, input_tokens", "tokens", "0.0000025"),
    ("ft-gpt-4o-2024-08-06, input", "tokens", "0.00000375"),
    ("ft-gpt-4o-2024-08-06, output", "tokens", "0.000015"),
    ("gpt-5.4-2026-03-05, input", "tokens", "0.00000125"),
    ("gpt-5.4-2026-03-05, output", "tokens", "0.00001"),
    ("gpt-5.4-2026-03-05, cached input", "tokens", "0.000000125"),
    ("gpt-5.4-2026-03-05, cache writes", "tokens", "0.0000015625"),
    ("gpt-5.4-mini-2026-03-17, input", "tokens", "0.00000025"),
    ("gpt-5.4-mini-2026-03-17, output", "tokens", "0.000002"),
    ("gpt-5.4-mini-2026-03-17, cached input", "tokens", "0.000000025"),
    ("gpt-5.6-sol, input", "tokens", "0.0000015"),
    ("gpt-5.6-sol, output", "tokens", "0.000012"),
    ("gpt-5.6-sol, cached input", "tokens", "0.00000015"),
    ("gpt-5.6-sol, cache writes", "tokens", "0.000001875"),
    ("gpt-5.6-sol, input, long context", "tokens", "0.000003"),
    ("gpt-5.6-sol, output, long context", "tokens", "0.000018"),
    ("priority | gpt-5.6-sol, input", "tokens", "0.0000026666666667"),
    ("priority | gpt-5.6-sol, output", "tokens", "0.0000213333333333"),
    ("priority | gpt-5.6-sol, output, long context", "tokens", "0.0000426666666667"),
    ("o1-pro, input", "tokens", "0.00015"),
    ("o1-pro, output", "tokens", "0.0006"),
    ("text-embedding-3-small, input", "tokens", "0.00000002"),
    ("text-embedding-3-large, input", "1000_tokens", "0.00013"),
    ("gpt-audio-mini-2025-12-15 audio, input", "tokens", "0.00001"),
    ("gpt-audio-mini-2025-12-15 audio, output", "tokens", "0.00002"),
    ("gpt-audio-mini-2025-12-15 text, input", "tokens", "0.0000006"),
    ("gpt-audio-mini-2025-12-15 text, output", "tokens", "0.0000024"),
    ("gpt-image-2.5-flare image, output", "images", "0.04"),
    ("gpt-image-2.5-flare text, input", "tokens", "0.000005"),
    ("whisper-1, audio", "duration_seconds", "0.0001"),
    ("gpt-4o-mini-transcribe, audio", "duration_minutes", "0.003"),
    ("tts-1-hd, characters", "characters", "0.00003"),
    ("web search tool calls", None, "0.01"),
    ("Web search tool calls", None, "0.025"),
    ("Vector storage", "gibibyte_hours", "0.000138888888889"),
    ("Code interpreter sessions", "duration_hours", "0.03"),
)
LINE_ITEMS: tuple[str, ...] = tuple(c[0] for c in _CATALOGUE)
_L = len(_CATALOGUE)


def _quantity_table(unit: str | None) -> tuple[int, ...]:
    low, high, _ = _UNITS[unit]
    n = 1 << _QBITS
    return tuple(max(low, round(low * (high / low) ** (i / (n - 1)))) for i in range(n))


def _price_units(usd: str, unit: str | None) -> int:
    scaled = Decimal(usd) * SCALE / _UNITS[unit][2]
    if scaled != scaled.to_integral_value():
        raise ValueError(f"price {usd} has too many decimals")
    return int(scaled)


_QTABLES = {u: _quantity_table(u) for u in _UNITS}
_LI_QTABLE = tuple(_QTABLES[c[1]] for c in _CATALOGUE)
_LI_PRICE = tuple(_price_units(c[2], c[1]) for c in _CATALOGUE)
_LI_QSCALE = tuple(_UNITS[c[1]][2] for c in _CATALOGUE)
_LI_JSON = tuple(json.dumps(c[0]) for c in _CATALOGUE)
_LI_UNIT_JSON = tuple(json.dumps(c[1]) for c in _CATALOGUE)


def _split_bkey(bkey: int) -> tuple[int, int, bool]:
    """A leaf's packed key -> (line item index, quantity index, padded-amount flag)."""
    return bkey >> 13, (bkey >> 1) & ((1 << _QBITS) - 1), bool(bkey & 1)


def _base_units(bkey: int) -> int:
    li, qi, _ = _split_bkey(bkey)
    return _LI_QTABLE[li][qi] * _LI_PRICE[li]


def _qty_text(li: int, scaled: int) -> str:
    if _LI_QSCALE[li] == 1:
        return str(scaled)
    whole, tenth = divmod(scaled, 10)
    return f"{whole}.{tenth}"


def amount_text(units: int, padded: bool = False) -> str:
    """JSON number text for ``units`` * 1e-16 USD, never through float.

    Below 1e-4 it uses exponent notation (``1.29e-05``); otherwise either all 16 decimals
    (``0.8958740000000000``, when ``padded``) or trailing zeros trimmed (``0.4105``, ``2.0``).
    """
    if units < 0:
        return "-" + amount_text(-units, padded)
    if units == 0:
        return "0.0"
    whole, frac = divmod(units, SCALE)
    if whole == 0 and frac < 10**12:
        digits = str(units)
        mantissa = digits.rstrip("0")
        mantissa = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
        return f"{mantissa}e-{17 - len(digits):02d}"
    if padded:
        return f"{whole}.{frac:016d}"
    return f"{whole}.{f'{frac:016d}'.rstrip('0') or '0'}"


def _units_to_decimal(units: int) -> Decimal:
    return Decimal(amount_text(units))


def _scale_units(units: int, factor: Decimal) -> int:
    """``units * factor`` rounded half-even to a whole 1e-16, in exact integer arithmetic."""
    num, den = factor.as_integer_ratio()
    q, r = divmod(units * num, den)
    if 2 * r > den or (2 * r == den and q % 2):
        q += 1
    return q


# --------------------------------------------------------------------------- data


def _ident(prefix: str, seed_text: str, length: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    rng = random.Random(seed_text)
    return prefix + "".join(rng.choice(alphabet) for _ in range(length))


@dataclass(frozen=True)
class _Universe:
    """An org's projects and API keys; combo ``c`` is (line item ``c % L``, key ``c // L``)."""

    projects: tuple[str, ...]
    keys: tuple[str, ...]  # key index -> id; its project is index // per_project
    per_project: int

    @classmethod
    def build(cls, seed: int, org: str, results_per_day: int) -> _Universe:
        n_proj = 3
        while _L * n_proj * n_proj < results_per_day:
            n_proj += 1
        per = n_proj
        projects = tuple(_ident("proj_", f"{seed}|{org}|p{i}", 24) for i in range(n_proj))
        keys = tuple(_ident("key_", f"{seed}|{org}|k{i}", 16) for i in range(n_proj * per))
        return cls(projects, keys, per)

    @property
    def combos(self) -> int:
        return _L * len(self.keys)


@dataclass
class _Day:
    """The leaves of one (org, day), as parallel arrays."""

    keys: array  # api key index per leaf
    bkeys: array  # packed (line item, quantity index, padded flag) per leaf
    hours: bytes
    units: list[int] | None = None  # set once the day has been restated

    def leaf_units(self) -> list[int]:
        return self.units if self.units is not None else [_base_units(b) for b in self.bkeys]


def _coprime(rng: random.Random, n: int) -> int:
    while True:
        a = rng.randrange(1, max(2, n))
        if math.gcd(a, n) == 1:
            return a


def _generate_day(seed: int, org: str, day: date, uni: _Universe, n: int) -> _Day:
    """The deterministic leaves of (seed, org, day): n unique combos, or none (~10% of days)."""
    rng = random.Random(f"{seed}|{org}|{day.isoformat()}")
    if n <= 0 or rng.random() < EMPTY_DAY_RATE:
        return _Day(array("i"), array("i"), b"")
    total = uni.combos
    a, b = _coprime(rng, total), rng.randrange(total)
    combos = [(a * i + b) % total for i in range(n)]
    bits = array("I", rng.randbytes(4 * n))
    if sys.byteorder == "big":
        bits.byteswap()
    qmask = ((1 << _QBITS) - 1) << 1
    bkeys = array(
        "i",
        [
            ((c % _L) << 13) | ((x >> 2) & qmask) | ((x & 3) == 0)
            for c, x in zip(combos, bits, strict=True)
        ],
    )
    hours = bytes([(x >> 16) % 24 for x in bits])
    return _Day(array("i", [c // _L for c in combos]), bkeys, hours)


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Shape:
    """How results look: grouped dimensions plus the shape quirks of :class:`Faults`."""

    g_line_item: bool
    g_project: bool
    g_key: bool
    strings: bool
    extra: bool
    legacy: bool

    @property
    def per_leaf(self) -> bool:
        return self.g_line_item and self.g_project and self.g_key


def _j(value: str | None) -> str:
    return "null" if value is None else json.dumps(value)


def _result_head(shape: _Shape, org: str, project: str | None, key: str | None) -> str:
    head = '{"object":"organization.costs.result"'
    if shape.extra:
        head += f',"organization_id":{_j(org)}'
    head += f',"project_id":{_j(project)}'
    if not shape.legacy:
        head += f',"api_key_id":{_j(key)}'
    return head


def _result_body(shape: _Shape, amount: str, li: int | None, qty: int | None) -> str:
    value = f'"{amount}"' if shape.strings else amount
    body = f',"amount":{{"value":{value},"currency":"usd"}}'
    body += f',"line_item":{"null" if li is None else _LI_JSON[li]}'
    if not shape.legacy:
        qty_json = "null" if li is None or qty is None else _qty_text(li, qty)
        unit_json = "null" if li is None else _LI_UNIT_JSON[li]
        body += f',"quantity":{qty_json},"quantity_unit":{unit_json}'
    if shape.extra:
        body += ',"organization_name":"Emulated organization"'
    return body + "}"


class _LeafBodies(dict[int, bytes]):
    """Cache: packed leaf key -> rendered tail of the result (ending with a comma)."""

    def __init__(self, shape: _Shape) -> None:
        super().__init__()
        self.shape = shape

    def __missing__(self, bkey: int) -> bytes:
        li, qi, padded = _split_bkey(bkey)
        qty = _LI_QTABLE[li][qi]
        text = _result_body(self.shape, amount_text(qty * _LI_PRICE[li], padded), li, qty)
        self[bkey] = encoded = (text + ",").encode()
        return encoded


def _leaf_fragment(keys: array, bkeys: array, heads: list[bytes], bodies: _LeafBodies) -> bytes:
    """Results of one bucket when every leaf is its own result: mostly list and bytes joins."""
    if not keys:
        return b""
    parts: list[bytes] = [b""] * (2 * len(keys))
    parts[0::2] = map(heads.__getitem__, keys)
    parts[1::2] = map(bodies.__getitem__, bkeys)
    parts[-1] = parts[-1][:-1]
    return b"".join(parts)


def _grouped_fragment(
    shape: _Shape, org: str, uni: _Universe, keys: array, bkeys: array, units: list[int]
) -> bytes:
    """Results of one bucket aggregated by the grouped dimensions (exact integer sums)."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for k, bk, u in zip(keys, bkeys, units, strict=True):
        li, qi, padded = _split_bkey(bk)
        gkey = (
            li if shape.g_line_item else -1,
            k // uni.per_project if shape.g_project else -1,
            k if shape.g_key else -1,
        )
        acc = groups.get(gkey)
        if acc is None:
            groups[gkey] = [u, _LI_QTABLE[li][qi], int(padded)]
        else:
            acc[0] += u
            acc[1] += _LI_QTABLE[li][qi]
    out = []
    for (li, p, k), (u, qty, padded) in groups.items():
        head = _result_head(
            shape, org, uni.projects[p] if p >= 0 else None, uni.keys[k] if k >= 0 else None
        )
        body = _result_body(shape, amount_text(u, bool(padded)), li if li >= 0 else None, qty)
        out.append(head + body)
    return ",".join(out).encode()


# --------------------------------------------------------------------------- requests


class ApiError(Exception):
    """An OpenAI-style error answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            param,
            code,
            type_,
        )

    def body(self) -> bytes:
        err = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": err}).encode()


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param)


@dataclass(frozen=True)
class _Query:
    start: int
    end: int | None
    limit: int
    group_by: frozenset[str]
    project_ids: frozenset[str] | None
    api_key_ids: frozenset[str] | None
    page: str | None

    def fingerprint(self, org: str) -> str:
        def srt(s: frozenset[str] | None) -> list[str] | None:
            return None if s is None else sorted(s)

        canon = [org, self.start, self.end, sorted(self.group_by)]
        canon += [srt(self.project_ids), srt(self.api_key_ids)]
        return hashlib.sha256(json.dumps(canon).encode()).hexdigest()[:16]


_ARRAY_PARAMS = ("group_by", "project_ids", "api_key_ids")


def _collect_params(query: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    scalars: dict[str, str] = {}
    arrays: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        base = name.removesuffix("[]")
        if base in _ARRAY_PARAMS:
            arrays.setdefault(base, []).append(value)
        elif name == base:
            scalars[name] = value
    return scalars, arrays


def _int_param(scalars: dict[str, str], name: str, low: int, high: int) -> int | None:
    raw = scalars.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"-?[0-9]+", raw.strip()):
        raise _bad(name, f"Invalid value for '{name}': {raw!r} is not an integer.")
    value = int(raw.strip())
    if not low <= value <= high:
        raise _bad(name, f"Invalid value for '{name}': must be between {low} and {high}.")
    return value


def _array_param(arrays: dict[str, list[str]], name: str) -> frozenset[str] | None:
    values = arrays.get(name)
    if values is None:
        return None
    if any(not v for v in values):
        raise _bad(name, f"Invalid value for '{name}': empty string.")
    return frozenset(values)


def parse_query(query: str) -> _Query:
    """Validate the query string of a costs request; raises :class:`ApiError` (400)."""
    scalars, arrays = _collect_params(query)
    start = _int_param(scalars, "start_time", 0, _MAX_TS)
    if start is None:
        raise _bad("start_time", "Missing required parameter: 'start_time'.")
    end = _int_param(scalars, "end_time", 0, _MAX_TS)
    if end is not None and end <= start:
        raise _bad("end_time", "Invalid value for 'end_time': must be after 'start_time'.")
    width = scalars.get("bucket_width", "1d")
    if width != "1d":
        raise _bad(
            "bucket_width", f"Invalid value for 'bucket_width': {width!r}; costs support '1d' only."
        )
    limit = _int_param(scalars, "limit", 1, MAX_LIMIT)
    group_by = _array_param(arrays, "group_by") or frozenset()
    for dim in sorted(group_by - set(GROUP_DIMS)):
        raise _bad(
            "group_by",
            f"Invalid value for 'group_by': {dim!r}. Supported: {', '.join(GROUP_DIMS)}.",
        )
    return _Query(
        start,
        end,
        DEFAULT_LIMIT if limit is None else limit,
        group_by,
        _array_param(arrays, "project_ids"),
        _array_param(arrays, "api_key_ids"),
        scalars.get("page"),
    )


def _mask(key: str) -> str:
    prefix = (
        "sk-admin-" if key.startswith("sk-admin-") else key[:3] if key.startswith("sk-") else ""
    )
    return f"{prefix}***{key[-4:]}"


@dataclass
class _Response:
    status: int
    chunks: list[bytes]
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False
    content_type: str = "application/json"

    @classmethod
    def error(cls, err: ApiError, headers: dict[str, str] | None = None) -> _Response:
        return cls(err.status, [err.body()], headers or {})


_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_MALFORMED = b'{"object":"page","data":[{"object":"bucket","start_time":,"results":[{]}'


def _coalesce(chunks: list[bytes], size: int = 1 << 20) -> Iterable[bytes]:
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


def _day_start(day: date) -> int:
    return (day - date(1970, 1, 1)).days * DAY


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spans(
    start: int, end: int | None, limit: int, now_ts: int
) -> tuple[list[tuple[int, int]], bool]:
    """Bucket spans of one page from ``start``: day-aligned except the first and the last."""
    stop = now_ts if end is None else min(end, now_ts)
    spans: list[tuple[int, int]] = []
    cur = start
    while cur < stop and len(spans) < limit:
        nxt = min(cur - cur % DAY + DAY, stop)
        spans.append((cur, nxt))
        cur = nxt
    return spans, cur < stop


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
        _check_orgs(self.orgs)
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
        self._universes: dict[str, _Universe] = {}
        self._days: OrderedDict[tuple[str, date], _Day] = OrderedDict()
        self._frags: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._frag_bytes = 0
        self._leaf_caches: dict[tuple[str, _Shape], tuple[list[bytes], _LeafBodies]] = {}
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
        return {
            d: _units_to_decimal(u) for d, u in self._expected_units(org_id, start, end).items()
        }

    def expected_total(self, org_id: str, start: date, end: date) -> Decimal:
        return _units_to_decimal(sum(self._expected_units(org_id, start, end).values()))

    def results_for_day(self, org_id: str, day: date) -> list[dict[str, Any]]:
        """The leaf rows of a whole day (ignoring the partial-today rule), with their ``hour``."""
        self._check_org(org_id)
        with self._lock:
            uni, d = self._universe(org_id), self._day(org_id, day)
            units = d.leaf_units()
        return [
            _leaf_row(uni, k, bk, u, h)
            for k, bk, u, h in zip(d.keys, d.bkeys, units, d.hours, strict=True)
        ]

    def _expected_units(self, org_id: str, start: date, end: date) -> dict[date, int]:
        self._check_org(org_id)
        now_ts = self._now_ts()
        out: dict[date, int] = {}
        day = start
        while day <= end and _day_start(day) < now_ts:
            hours = min(24, (now_ts - _day_start(day)) // 3600)
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

    def _universe(self, org: str) -> _Universe:
        uni = self._universes.get(org)
        if uni is None:
            uni = self._universes[org] = _Universe.build(self.seed, org, self.results_per_day)
        return uni

    def _day(self, org: str, day: date) -> _Day:
        key = (org, day)
        d = self._days.get(key)
        if d is not None:
            self._days.move_to_end(key)
            return d
        d = _generate_day(self.seed, org, day, self._universe(org), self.results_per_day)
        for factor in self._restated.get(key, ()):
            d.units = [_scale_units(u, factor) for u in d.leaf_units()]
        self._days[key] = d
        if len(self._days) > DAY_CACHE_MAX:
            self._days.popitem(last=False)
        return d

    def _fragment(
        self, org: str, day: date, hours: tuple[int, int], shape: _Shape, q: _Query
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
        self, org: str, day: date, hours: tuple[int, int], shape: _Shape, q: _Query
    ) -> bytes:
        uni, d = self._universe(org), self._day(org, day)
        keys, bkeys, units = _select(d, uni, hours, q)
        if shape.per_leaf and units is None:
            heads, bodies = self._leaf_cache(org, shape)
            return _leaf_fragment(keys, bkeys, heads, bodies)
        if units is None:
            units = [_base_units(b) for b in bkeys]
        return _grouped_fragment(shape, org, uni, keys, bkeys, units)

    def _leaf_cache(self, org: str, shape: _Shape) -> tuple[list[bytes], _LeafBodies]:
        cache = self._leaf_caches.get((org, shape))
        if cache is None:
            uni = self._universe(org)
            heads = [
                _result_head(shape, org, uni.projects[k // uni.per_project], key).encode()
                for k, key in enumerate(uni.keys)
            ]
            cache = self._leaf_caches[(org, shape)] = (heads, _LeafBodies(shape))
        return cache

    # ---------------------------------------------------------------- requests

    def handle(self, method: str, target: str, authorization: str | None) -> _Response:
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
            return _Response.error(err)
        with self._lock:
            if faults.take("malformed_first"):
                response.chunks = [_MALFORMED]
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
            raise ApiError(401, _NO_KEY)
        if key.startswith("sk-") and not key.startswith("sk-admin-"):
            raise ApiError(403, _MISSING_SCOPES)
        with self._lock:
            org = None if key in self._revoked else self._key_org.get(key)
        if org is None:
            raise ApiError(401, _bad_key(key), code="invalid_api_key")
        return org

    def _shape(self, group_by: frozenset[str]) -> _Shape:
        f = self.faults
        return _Shape(
            "line_item" in group_by,
            "project_id" in group_by,
            "api_key_id" in group_by and not f.legacy_shape,
            f.amounts_as_strings,
            f.extra_keys,
            f.legacy_shape,
        )

    def _page(self, org: str, q: _Query, now_ts: int) -> _Response:
        fingerprint = q.fingerprint(org)
        start = q.start if q.page is None else self._decode_cursor(q.page, fingerprint)
        spans, has_more = _spans(start, q.end, q.limit, now_ts)
        shape = self._shape(q.group_by)
        extra = f',"organization_id":{_j(org)}' if shape.extra else ""
        chunks = [f'{{"object":"page"{extra},"data":['.encode()]
        for i, (s, e) in enumerate(spans):
            chunks.append(self._bucket_head(org, s, e, shape, first=i == 0))
            chunks.append(self._span_fragment(org, s, e, shape, q))
            chunks.append(b"]}")
        next_page = self._encode_cursor(spans[-1][1], fingerprint) if has_more else None
        more = "true" if has_more else "false"
        chunks.append(f'],"has_more":{more},"next_page":{_j(next_page)}}}'.encode())
        headers = {"openai-organization": org, "openai-version": "2020-10-01"}
        return _Response(200, chunks, headers)

    def _span_fragment(self, org: str, s: int, e: int, shape: _Shape, q: _Query) -> bytes:
        d0 = s - s % DAY
        day = date(1970, 1, 1) + timedelta(days=d0 // DAY)
        return self._fragment(org, day, ((s - d0) // 3600, (e - d0) // 3600), shape, q)

    @staticmethod
    def _bucket_head(org: str, s: int, e: int, shape: _Shape, first: bool) -> bytes:
        head = f'{"" if first else ","}{{"object":"bucket","start_time":{s},"end_time":{e}'
        if shape.extra:
            head += f',"organization_id":{_j(org)},"start_time_iso":"{_iso(s)}"'
            head += f',"end_time_iso":"{_iso(e)}"'
        return (head + ',"results":[').encode()

    def _encode_cursor(self, next_start: int, fingerprint: str) -> str:
        payload = f"{next_start}.{fingerprint}"
        mac = hmac.new(self._secret, payload.encode(), "sha256").hexdigest()[:16]
        raw = base64.urlsafe_b64encode(f"{payload}.{mac}".encode()).decode().rstrip("=")
        return "page_" + raw

    def _decode_cursor(self, page: str, fingerprint: str) -> int:
        invalid = _bad("page", f"Invalid value for 'page': {page!r} is not a valid cursor.")
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
            raise _bad("page", "Invalid value for 'page': the cursor belongs to a different query.")
        return int(next_start)


_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_MISSING_SCOPES = (
    "You have insufficient permissions for this operation. Missing scopes: api.usage.read. "
    "Check that you have the correct role in your organization (Owner), and if you're using a "
    "restricted API key, that it has the necessary scopes."
)


def _bad_key(key: str) -> str:
    return (
        f"Incorrect API key provided: {_mask(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )


def _check_orgs(orgs: dict[str, str]) -> None:
    if len(set(orgs.values())) != len(orgs):
        raise ValueError("each organization needs its own admin key")
    for org, key in orgs.items():
        if not org or not key.startswith("sk-admin-"):
            raise ValueError(f"organization {org!r} needs an sk-admin- key")


def _leaf_row(uni: _Universe, k: int, bkey: int, units: int, hour: int) -> dict[str, Any]:
    li, qi, padded = _split_bkey(bkey)
    qty = _LI_QTABLE[li][qi]
    return {
        "line_item": LINE_ITEMS[li],
        "project_id": uni.projects[k // uni.per_project],
        "api_key_id": uni.keys[k],
        "amount": Decimal(amount_text(units, padded)),
        "currency": "usd",
        "quantity": qty if _LI_QSCALE[li] == 1 else Decimal(_qty_text(li, qty)),
        "quantity_unit": _CATALOGUE[li][1],
        "hour": hour,
    }


def _select(
    d: _Day, uni: _Universe, hours: tuple[int, int], q: _Query
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


def _transport_fault(number: int, faults: Faults) -> _Response | None:
    every = faults.rate_limit_every
    if faults.take("rate_limit_first") or (every > 0 and number % every == 0):
        headers = {} if faults.retry_after is None else {"Retry-After": faults.retry_after}
        err = ApiError(
            429,
            "Rate limit reached for requests. Please try again later.",
            code="rate_limit_exceeded",
            type_="requests",
        )
        return _Response.error(err, headers)
    if faults.take("server_error_first"):
        return _server_error(faults.server_error_status)
    return None


def _server_error(status: int) -> _Response:
    if status == 502:
        return _Response(502, [_HTML_502], content_type="text/html")
    message = (
        "The server is overloaded or not ready yet."
        if status == 503
        else "The server had an error while processing your request. Sorry about that!"
    )
    return _Response.error(ApiError(status, message, type_="server_error"))


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

    def _write(self, response: _Response, started: float) -> None:
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
        for piece in _coalesce(response.chunks):
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
        ).start()
    except (OSError, ValueError) as exc:
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
