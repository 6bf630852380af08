"""A local, faithful emulator of Anthropic's Admin API cost report and names endpoints.

It serves real HTTP (default 127.0.0.1) and behaves like ``GET /v1/organizations/cost_report``
as ``reference/anthropic-admin-api.md`` describes it: daily buckets from ``starting_at``
(snapped to the UTC day) to ``ending_at`` (exclusive) or now, ``limit`` 1..31 buckets a page
(default 7) with an opaque ``next_page`` cursor, ``group_by[]`` of ``workspace_id`` and
``description`` (ungrouped dimensions are null, the default workspace's id is null), amounts
as decimal strings in CENTS, Anthropic's error shape (``{"type": "error", "error": {...}}``) and
``request-id`` header, and the shared fault switches. Also ``/v1/organizations/me``,
``/workspaces`` and ``/api_keys`` (``after_id`` paging) with deterministic names whose ids are
the cost data's. Standard library only; it must not import dagster.

Data rules (also used by :meth:`AnthropicEmulator.expected_totals`): see
:mod:`.emulator_data`; today's bucket holds the leaves charged at an hour before now's hour.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from grafient_pipeline.providers.anthropic.emulator_data import (
    CATALOGUE,
    Leaf,
    Org,
    generate_day,
    result,
    scale,
    units_to_usd,
)
from grafient_pipeline.providers.emulator_server import (
    DAY,
    Cursors,
    EmulatedError,
    HttpEmulator,
    Response,
    add_common_arguments,
    collect_params,
    command_main,
    day_start,
    demo_key,
    int_param,
    iso,
    list_body,
    list_page,
    run_emulator,
)

PREFIX = "/v1/organizations/"
COST_REPORT = "cost_report"
GROUP_DIMS = ("workspace_id", "description")
MAX_LIMIT = 31
DEFAULT_LIMIT = 7
ADMIN_PREFIX = "sk-ant-admin"
DEMO_ORGS: dict[str, str] = {"org-acme-claude": demo_key("sk-ant-admin01-", "org-acme-claude")}


class AnthropicError(EmulatedError):
    """An Anthropic-style error answer."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message

    def body(self) -> bytes:
        return json.dumps(
            {"type": "error", "error": {"type": self.kind, "message": self.message}}
        ).encode()


def invalid(param: str, message: str) -> AnthropicError:
    return AnthropicError(400, "invalid_request_error", f"{param}: {message}")


@dataclass(frozen=True)
class Query:
    start: int  # the first bucket's start (a UTC midnight)
    end: int | None  # buckets end at or before it
    limit: int
    group_by: frozenset[str]
    page: str | None

    def fingerprint(self, org: str) -> str:
        canon = [org, self.start, self.end, sorted(self.group_by)]
        return hashlib.sha256(json.dumps(canon).encode()).hexdigest()[:16]


def _timestamp(scalars: Mapping[str, str], name: str) -> int | None:
    raw = scalars.get(name)
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(name, f"Input should be a valid RFC 3339 datetime, got {raw!r}") from None
    if when.tzinfo is None:
        raise invalid(name, "Input should have a timezone")
    return int(when.timestamp())


def parse_query(query: str) -> Query:
    """Validate a cost report query string; raises AnthropicError (400)."""
    scalars, arrays = collect_params(query, ("group_by",))
    start = _timestamp(scalars, "starting_at")
    if start is None:
        raise invalid("starting_at", "Field required")
    end = _timestamp(scalars, "ending_at")
    start -= start % DAY  # buckets snap to the UTC day
    if end is not None and end <= start:
        raise invalid("ending_at", "must be after starting_at")
    if scalars.get("bucket_width", "1d") != "1d":
        raise invalid("bucket_width", "Input should be '1d'")
    limit = int_param(scalars, "limit", 1, MAX_LIMIT, invalid)
    group_by = frozenset(arrays.get("group_by", ()))
    for dim in sorted(group_by - set(GROUP_DIMS)):
        raise invalid("group_by", f"Input should be 'workspace_id' or 'description', not {dim!r}")
    return Query(start, end, limit or DEFAULT_LIMIT, group_by, scalars.get("page"))


class AnthropicEmulator(HttpEmulator):
    """The emulated Admin API over real HTTP; see the module docstring."""

    request_id_header = "request-id"
    malformed_body = b'{"data":[{"starting_at":,"results":[{]}'

    def __init__(
        self,
        orgs: dict[str, str] | None = None,
        *,
        seed: int = 0,
        results_per_day: int = 24,
        port: int = 0,
        host: str = "127.0.0.1",
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.orgs: dict[str, str] = dict(DEMO_ORGS if orgs is None else orgs)
        if len(set(self.orgs.values())) != len(self.orgs):
            raise ValueError("each organization needs its own admin key")
        for org, key in self.orgs.items():
            if not org or not key.startswith(ADMIN_PREFIX):
                raise ValueError(f"organization {org!r} needs an {ADMIN_PREFIX} key")
        if results_per_day < 0:
            raise ValueError("results_per_day must be >= 0")
        super().__init__(port=port, host=host)
        self.seed, self.results_per_day = seed, results_per_day
        self._now = now or (lambda: datetime.now(UTC))
        self._key_org = {key: org for org, key in self.orgs.items()}
        self._revoked: set[str] = set()
        self._restated: dict[tuple[str, date], list[Decimal]] = {}
        self._cursors = Cursors(seed)

    # ---------------------------------------------------------------- test controls

    def revoke_key(self, key: str) -> None:
        with self._lock:
            self._revoked.add(key)

    def restate_day(self, org_id: str, day: date, factor: Decimal) -> None:
        """Multiply each leaf amount of that day by ``factor``, rounded half-even to 1e-10
        cents."""
        self._org(org_id)
        factor = Decimal(factor)
        if not factor.is_finite():
            raise ValueError("factor must be a finite Decimal")
        with self._lock:
            self._restated.setdefault((org_id, day), []).append(factor)

    def expected_totals(self, org_id: str, start: date, end: date) -> dict[date, Decimal]:
        """Per UTC day in ``[start, end]`` (end inclusive), the USD sum of all results as served
        now (cents / 100, exact): days not yet started are absent; today holds the leaves of
        the hours already past; empty days are ``Decimal(0)``."""
        self._org(org_id)
        now_ts = self._now_ts()
        out: dict[date, Decimal] = {}
        day = start
        while day <= end and day_start(day) < now_ts:
            hours = min(24, (now_ts - day_start(day)) // 3600)
            out[day] = units_to_usd(sum(leaf.units for leaf in self.leaves(org_id, day, hours)))
            day += timedelta(days=1)
        return out

    def leaves(self, org_id: str, day: date, hours: int = 24) -> list[Leaf]:
        """The day's leaves charged before ``hours`` (restatements applied)."""
        leaves = generate_day(
            self.seed, org_id, day, len(self._org(org_id).workspaces), self.results_per_day
        )
        with self._lock:
            factors = list(self._restated.get((org_id, day), ()))
        for factor in factors:
            for leaf in leaves:
                leaf.units = scale(leaf.units, factor)
        return [leaf for leaf in leaves if leaf.hour < hours]

    def _org(self, org_id: str) -> Org:
        if org_id not in self.orgs:
            raise KeyError(f"unknown organization {org_id!r}")
        return Org.build(self.seed, org_id)

    def _now_ts(self) -> int:
        now = self._now()
        return int((now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp())

    # ---------------------------------------------------------------- requests

    def answer(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        return self.handle(method, target, headers)

    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        """Answer one HTTP request (used by the HTTP handler; callable directly in tests)."""
        return self.with_faults(lambda: self._route(method, target, headers))

    def rate_limited(self, headers: dict[str, str]) -> Response:
        err = AnthropicError(
            429,
            "rate_limit_error",
            "This request would exceed your organization's rate limit. Please try again later.",
        )
        return Response.error(err, {**headers, "x-should-retry": "true"})

    def server_error(self, status: int) -> Response:
        if status == 529:
            return Response.error(AnthropicError(529, "overloaded_error", "Overloaded"))
        return Response.error(AnthropicError(status, "api_error", "Internal server error"))

    def _route(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        parts = urlsplit(target)
        name = parts.path.removeprefix(PREFIX)
        known = (COST_REPORT, "me", "workspaces", "api_keys")
        if method != "GET" or not parts.path.startswith(PREFIX) or name not in known:
            raise AnthropicError(404, "not_found_error", f"Not found: {method} {parts.path}")
        org = self._authenticate(headers)
        if not headers.get("anthropic-version"):
            raise AnthropicError(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        if name == COST_REPORT:
            return self._cost_page(org, parse_query(parts.query))
        if name == "me":
            body: dict[str, Any] = {"id": org, "type": "organization", "name": f"{org} (emulated)"}
            return Response(200, [json.dumps(body).encode()])
        return self._names_page(org, name, parts.query)

    def _authenticate(self, headers: Mapping[str, str]) -> str:
        key = (headers.get("x-api-key") or "").strip()
        if not key:
            raise AnthropicError(401, "authentication_error", "x-api-key header is required")
        if key.startswith("sk-ant-") and not key.startswith(ADMIN_PREFIX):
            raise AnthropicError(
                403,
                "permission_error",
                "This API key does not have access to the Admin API: use an Admin API key.",
            )
        with self._lock:
            org = None if key in self._revoked else self._key_org.get(key)
        if org is None:
            raise AnthropicError(401, "authentication_error", "invalid x-api-key")
        return org

    def _cost_page(self, org: str, q: Query) -> Response:
        fingerprint = q.fingerprint(org)
        start = q.start
        if q.page is not None:
            try:
                start = self._cursors.decode(q.page, fingerprint)
            except KeyError:
                raise invalid("page", "the cursor belongs to a different query") from None
            except ValueError:
                raise invalid("page", f"{q.page!r} is not a valid page cursor") from None
        now_ts = self._now_ts()
        stop = now_ts if q.end is None else min(q.end, now_ts)
        buckets = []
        cur = start
        while cur < stop and (q.end is None or cur + DAY <= q.end) and len(buckets) < q.limit:
            buckets.append(self._bucket(org, cur, now_ts, q.group_by))
            cur += DAY
        has_more = cur < stop and (q.end is None or cur + DAY <= q.end)
        next_page = self._cursors.encode(cur, fingerprint) if has_more else None
        body = {"data": buckets, "has_more": has_more, "next_page": next_page}
        return Response(200, [json.dumps(body).encode()])

    def _bucket(self, org: str, start: int, now_ts: int, group_by: frozenset[str]) -> dict:
        day = date(1970, 1, 1) + timedelta(days=start // DAY)
        hours = min(24, (now_ts - start) // 3600)
        by_workspace, by_description = "workspace_id" in group_by, "description" in group_by
        sums: dict[tuple[int, int], int] = {}
        for leaf in self.leaves(org, day, hours):
            key = (leaf.workspace if by_workspace else -1, leaf.line if by_description else -1)
            sums[key] = sums.get(key, 0) + leaf.units
        info = self._org(org)
        results = [
            result(info, key, units, by_workspace, by_description)
            for key, units in sorted(sums.items())
        ]
        return {"starting_at": iso(start), "ending_at": iso(start + DAY), "results": results}

    def _names_page(self, org: str, name: str, query: str) -> Response:
        scalars, _ = collect_params(query, ())
        limit = int_param(scalars, "limit", 1, 1000, invalid) or 20
        info = self._org(org)
        if name == "workspaces":
            items = info.workspace_items(scalars.get("include_archived", "") == "true")
        else:
            items = info.key_items()
        found = list_page(items, scalars.get("after_id"), limit)
        if found is None:
            raise invalid("after_id", f"{scalars.get('after_id')!r} is not an id of this list")
        return Response(200, [json.dumps(list_body(*found)).encode()])


# --------------------------------------------------------------------------- command line


_MODULE = "grafient_pipeline.providers.anthropic.emulator"
_BANNER = [
    "Anthropic Admin API",
    "GRAFIENT_ANTHROPIC_BASE_URL",
    "GET /v1/organizations/cost_report",
]


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``grafient emulator --provider anthropic`` and ``python -m ...emulator``."""
    add_common_arguments(parser, key_prefix=ADMIN_PREFIX, port=8788, results_per_day=24)


def run_from_args(args: argparse.Namespace) -> int:
    """Start the emulator, print its base URL and keys, serve until Ctrl-C or SIGTERM."""
    return run_emulator(args, AnthropicEmulator, _BANNER)


def main(argv: list[str] | None = None) -> int:
    return command_main(_MODULE, add_emulator_arguments, run_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["CATALOGUE", "DEMO_ORGS", "AnthropicEmulator", "add_emulator_arguments", "run_from_args"]
