"""The request side of the Costs API emulator: what a request may say and how answers look.

Holds :class:`ApiError` (OpenAI-style error bodies), query-string parsing and validation
(:func:`parse_query`), the demo organizations and the authentication messages, the response
object and its chunked writing, bucket spans of a page, and the canned fault answers (5xx pages,
malformed body). No data generation and no server state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from grafient_pipeline.providers.emulator_server import (
    DAY,
    HTML_502,
    EmulatedError,
    Response,
    coalesce,
    collect_params,
    day_start,
    demo_key,
    int_param,
    iso,
)

__all__ = ["DAY", "Response", "coalesce", "day_start", "iso"]  # re-exported for the emulator
COSTS_PATH = "/v1/organization/costs"
GROUP_DIMS = ("project_id", "line_item", "api_key_id")
MAX_LIMIT = 180
DEFAULT_LIMIT = 7
_MAX_TS = 2**33


DEMO_ORGS: dict[str, str] = {
    o: demo_key("sk-admin-", o) for o in ("org-acme-prod", "org-acme-research")
}


# --------------------------------------------------------------------------- requests


class ApiError(EmulatedError):
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


def bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param)


@dataclass(frozen=True)
class Query:
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


def _int_param(scalars: dict[str, str], name: str, low: int, high: int) -> int | None:
    return int_param(scalars, name, low, high, bad)


def _array_param(arrays: dict[str, list[str]], name: str) -> frozenset[str] | None:
    values = arrays.get(name)
    if values is None:
        return None
    if any(not v for v in values):
        raise bad(name, f"Invalid value for '{name}': empty string.")
    return frozenset(values)


def parse_query(query: str) -> Query:
    """Validate the query string of a costs request; raises :class:`ApiError` (400)."""
    scalars, arrays = collect_params(query, _ARRAY_PARAMS)
    start = _int_param(scalars, "start_time", 0, _MAX_TS)
    if start is None:
        raise bad("start_time", "Missing required parameter: 'start_time'.")
    end = _int_param(scalars, "end_time", 0, _MAX_TS)
    if end is not None and end <= start:
        raise bad("end_time", "Invalid value for 'end_time': must be after 'start_time'.")
    width = scalars.get("bucket_width", "1d")
    if width != "1d":
        raise bad(
            "bucket_width", f"Invalid value for 'bucket_width': {width!r}; costs support '1d' only."
        )
    limit = _int_param(scalars, "limit", 1, MAX_LIMIT)
    group_by = _array_param(arrays, "group_by") or frozenset()
    for dim in sorted(group_by - set(GROUP_DIMS)):
        raise bad(
            "group_by",
            f"Invalid value for 'group_by': {dim!r}. Supported: {', '.join(GROUP_DIMS)}.",
        )
    return Query(
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


MALFORMED = b'{"object":"page","data":[{"object":"bucket","start_time":,"results":[{]}'


def bucket_spans(
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


NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
MISSING_SCOPES = (
    "You have insufficient permissions for this operation. Missing scopes: api.usage.read. "
    "Check that you have the correct role in your organization (Owner), and if you're using a "
    "restricted API key, that it has the necessary scopes."
)


def bad_key(key: str) -> str:
    return (
        f"Incorrect API key provided: {_mask(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )


def check_orgs(orgs: dict[str, str]) -> None:
    if len(set(orgs.values())) != len(orgs):
        raise ValueError("each organization needs its own admin key")
    for org, key in orgs.items():
        if not org or not key.startswith("sk-admin-"):
            raise ValueError(f"organization {org!r} needs an sk-admin- key")


def server_error(status: int) -> Response:
    if status == 502:
        return Response(502, [HTML_502], content_type="text/html")
    message = (
        "The server is overloaded or not ready yet."
        if status == 503
        else "The server had an error while processing your request. Sorry about that!"
    )
    return Response.error(ApiError(status, message, type_="server_error"))
