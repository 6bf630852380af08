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

The data side lives in :mod:`.emulator_data`, the request side (errors, query parsing, auth
messages, responses) in :mod:`.emulator_protocol`; this module holds the fault switches,
:class:`CostsEmulator`, the HTTP server and the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from grafient_pipeline.providers.emulator_server import (
    Cursors,
    FaultSwitches,
    HttpEmulator,
    add_common_arguments,
    command_main,
    int_param,
    list_body,
    list_page,
    run_emulator,
)
from grafient_pipeline.providers.openai.emulator_data import (
    EMPTY_DAY_RATE,
    LINE_ITEMS,
    SCALE,
    Day,
    LeafBodies,
    Shape,
    Universe,
    amount_text,
    api_key_items,
    base_units,
    generate_day,
    grouped_fragment,
    j,
    leaf_fragment,
    leaf_row,
    names_route,
    project_items,
    result_head,
    scale_units,
    units_to_decimal,
)
from grafient_pipeline.providers.openai.emulator_protocol import (
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
class Faults(FaultSwitches):
    """Fault switches (see :class:`FaultSwitches`) plus OpenAI's shape quirks.

    A 502 comes back as a Cloudflare-style HTML page; 500/503 as OpenAI JSON errors. Shape
    quirks: ``amounts_as_strings`` quotes the same exact amount text; ``extra_keys`` adds
    ``organization_id`` (and a few more) to page, buckets and results; ``legacy_shape`` omits
    ``api_key_id``, ``quantity`` and ``quantity_unit`` and, like the old API, ignores
    ``group_by=api_key_id`` (amounts are then summed over keys).
    """

    amounts_as_strings: bool = False
    extra_keys: bool = False
    legacy_shape: bool = False


# --------------------------------------------------------------------------- emulator


class CostsEmulator(HttpEmulator):
    """The emulated endpoint over real HTTP; see the module docstring for the data rules."""

    processing_header = "openai-processing-ms"
    malformed_body = MALFORMED
    faults: Faults

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
        super().__init__(port=port, host=host)
        self.seed, self.results_per_day = seed, results_per_day
        self._now = now or (lambda: datetime.now(UTC))
        self.faults = Faults()
        self._key_org = {key: org for org, key in self.orgs.items()}
        self._revoked: set[str] = set()
        self._restated: dict[tuple[str, date], list[Decimal]] = {}
        self._universes: dict[str, Universe] = {}
        self._days: OrderedDict[tuple[str, date], Day] = OrderedDict()
        self._frags: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._frag_bytes = 0
        self._leaf_caches: dict[tuple[str, Shape], tuple[list[bytes], LeafBodies]] = {}
        self._cursors = Cursors(seed)

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

    def answer(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        return self.handle(method, target, headers.get("Authorization"))

    def handle(self, method: str, target: str, authorization: str | None) -> Response:
        """Answer one HTTP request (used by the HTTP handler; callable directly in tests)."""
        return self.with_faults(lambda: self._route(method, target, authorization))

    def rate_limited(self, headers: dict[str, str]) -> Response:
        err = ApiError(
            429,
            "Rate limit reached for requests. Please try again later.",
            code="rate_limit_exceeded",
            type_="requests",
        )
        return Response.error(err, headers)

    def server_error(self, status: int) -> Response:
        return server_error(status)

    def _route(self, method: str, target: str, authorization: str | None) -> Response:
        parts = urlsplit(target)
        path = parts.path
        names = names_route(path)
        if method != "GET" or (path != COSTS_PATH and names is None):
            raise ApiError(404, f"Invalid URL ({method} {path})")
        org = self._authenticate(authorization)
        if path == COSTS_PATH:
            return self._page(org, parse_query(parts.query), self._now_ts())
        return self._names_page(org, names, parts.query)  # type: ignore[arg-type]

    def _authenticate(self, authorization: str | None) -> str:
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

    def _names_page(self, org: str, route: tuple[str, str | None], query: str) -> Response:
        """GET /v1/organization/projects and /v1/organization/projects/{id}/api_keys."""
        scalars = dict(parse_qsl(query, keep_blank_values=True))
        limit = int_param(scalars, "limit", 1, 100, bad) or 20
        with self._lock:
            uni = self._universe(org)
        kind, project_id = route
        if kind == "projects":
            archived = scalars.get("include_archived", "false").lower() == "true"
            items = project_items(uni, archived)
        else:
            items = api_key_items(uni, project_id or "")
            if items is None:
                raise ApiError(404, f"No such project: {project_id}", code="not_found")
        found = list_page(items, scalars.get("after"), limit)
        if found is None:
            raise bad("after", f"Invalid value for 'after': {scalars.get('after')!r}.")
        body = {"object": "list", **list_body(*found)}
        return Response(200, [json.dumps(body).encode()], {"openai-organization": org})

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
        return self._cursors.encode(next_start, fingerprint)

    def _decode_cursor(self, page: str, fingerprint: str) -> int:
        try:
            return self._cursors.decode(page, fingerprint)
        except KeyError:
            raise bad(
                "page", "Invalid value for 'page': the cursor belongs to a different query."
            ) from None
        except ValueError:
            raise bad(
                "page", f"Invalid value for 'page': {page!r} is not a valid cursor."
            ) from None


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


# --------------------------------------------------------------------------- command line


_MODULE = "grafient_pipeline.providers.openai.emulator"
_BANNER = ["OpenAI Costs API", "GRAFIENT_OPENAI_BASE_URL", "GET /v1/organization/costs"]


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the emulator command (``grafient emulator`` and ``python -m ...emulator``)."""
    add_common_arguments(parser, key_prefix="sk-admin-", port=8787, results_per_day=40)


def run_from_args(args: argparse.Namespace) -> int:
    """Start the emulator, print its base URL and keys, serve until Ctrl-C or SIGTERM."""
    return run_emulator(args, CostsEmulator, _BANNER)


def main(argv: list[str] | None = None) -> int:
    return command_main(_MODULE, add_emulator_arguments, run_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())
