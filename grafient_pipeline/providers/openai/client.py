"""A small, exact, memory-bounded client for the OpenAI Admin Costs API (httpx, sync).

``CostsClient.iter_buckets`` streams each page and parses it incrementally, so memory stays around
one day bucket plus one read chunk whatever the page size. Amounts are ``Decimal`` read from the
JSON text (numbers or numeric strings), never floats. Retries and errors are the providers'
shared ones (:mod:`grafient_pipeline.providers.http`): 408, 409, 429, 5xx and transport errors
are retried, 400/401/403 never; error messages never contain the key. ``iter_projects`` and
``iter_api_keys`` read the names of the projects and keys the costs name by id.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from grafient_pipeline.providers.base import (
    BadRequestError,
    ConnectionCheck,
    CostBucket,
    CostsApiError,
    InvalidKeyError,
    MalformedResponseError,
    NameRecord,
    PermissionDeniedError,
    RateLimitedError,
    UpstreamError,
)
from grafient_pipeline.providers.http import (
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    MAX_ERROR_BODY,
    ApiClient,
    error_details,
    key_problem,
    status_kind,
)
from grafient_pipeline.providers.http import mask_key as _mask_key
from grafient_pipeline.providers.openai.costs_page import PageFormatError, PageReader

__all__ = [
    "GROUP_BY",
    "INITIAL_BACKOFF",
    "MAX_BACKOFF",
    "MAX_ERROR_BODY",
    "BadRequestError",
    "ConnectionCheck",
    "CostBucket",
    "CostsApiError",
    "CostsClient",
    "InvalidKeyError",
    "MalformedResponseError",
    "PermissionDeniedError",
    "RateLimitedError",
    "UpstreamError",
    "mask_key",
]

GROUP_BY = ("line_item", "project_id", "api_key_id")
COSTS_PATH = "organization/costs"
PROJECTS_PATH = "organization/projects"
MAX_PAGE_SIZE = 180
NAMES_PAGE_SIZE = 100  # the projects and project API keys endpoints' maximum
CHUNK_SIZE = 256 * 1024  # bytes per read; tests monkeypatch this down to a few bytes
ADMIN_KEYS_URL = "https://platform.openai.com/settings/organization/admin-keys"
_DAY = 86_400
_KEY_PREFIXES = ("sk-admin-", "sk-proj-", "sk-svcacct-", "sk-")


def mask_key(key: str) -> str:
    """``sk-admin-...abcd``: the kind of key and its last four characters, never more."""
    return _mask_key(key, _KEY_PREFIXES)


def _key_problem(key: str) -> tuple[type[CostsApiError], str] | None:
    """Why a key cannot be an admin key, judged from its text alone (None: it may be fine)."""
    return key_problem(
        key,
        vendor="OpenAI",
        admin_prefix="sk-admin-",
        other_keys=("sk-", "a project or user API key"),
        where=f"an Organization Owner creates one (Read only) at {ADMIN_KEYS_URL}",
        mask=mask_key(key),
    )


def _midnight(day: date) -> int:
    return (day.toordinal() - date(1970, 1, 1).toordinal()) * _DAY


_STATUS_MESSAGES: dict[str, tuple[str, str]] = {  # name -> (head, tail) of the message
    "invalid_key": (
        "OpenAI rejected the admin key {mask}",
        " (401 {code}): it is wrong or was revoked, so create a new read-only admin key at {url}"
        " and update the integration",
    ),
    "denied": (
        "OpenAI refused to show costs to this key",
        " ({status}{said}): reading costs needs an admin key (sk-admin-...) with the"
        " api.usage.read scope, which an Organization Owner creates as a Read only admin key at"
        " {url}",
    ),
    "bad_request": (
        "OpenAI rejected the costs request as invalid",
        " (400{said}): check the requested dates, and report it if it persists",
    ),
    "rate_limited": (
        "OpenAI kept rate-limiting the costs requests (429{said})",
        ": wait a few minutes and sync again",
    ),
    "upstream": (
        "OpenAI's Costs API kept failing (HTTP {status}{said})",
        ": OpenAI may be having trouble, so try again later",
    ),
    "not_found": (
        "OpenAI answered 404 Not Found for {path}",
        " at {base}: check the base URL (GRAFIENT_OPENAI_BASE_URL)",
    ),
    "other": (
        "OpenAI's Costs API answered an unexpected HTTP {status}{said}",
        ": check the base URL and try again later",
    ),
}


class CostsClient(ApiClient):
    """Reads daily cost buckets; one instance per organization (admin key)."""

    api_name = "the Costs API"
    vendor = "OpenAI"
    messages = _STATUS_MESSAGES
    max_page_size = MAX_PAGE_SIZE

    def __init__(
        self, api_key: str, base_url: str = "https://api.openai.com/v1", **options: Any
    ) -> None:
        """``options``: page_size, timeout, max_attempts, max_total_wait, sleep, transport,
        rng (see :class:`ApiClient`)."""
        super().__init__(api_key, base_url, **options)

    # ----------------------------------------------------------------- public calls

    def iter_buckets(self, start: date, end: date) -> Iterator[CostBucket]:
        """Daily buckets for UTC days ``start..end`` (inclusive), page by page, as they parse."""
        problem = _key_problem(self._key)
        if problem:
            raise problem[0](problem[1])
        days = end.toordinal() - start.toordinal() + 1
        if days < 1:
            raise ValueError(f"end {end} is before start {start}")
        query: list[tuple[str, str | int]] = [
            ("start_time", _midnight(start)),
            ("end_time", _midnight(end) + _DAY),
            ("bucket_width", "1d"),
            ("limit", min(self._page_size, days)),
        ]
        query += [("group_by[]", dimension) for dimension in GROUP_BY]
        return self._pages(query, max_pages=2 * days + 10)

    def test_connection(self) -> ConnectionCheck:
        """Check the key's shape, then make one cheap request (yesterday, limit 1)."""
        problem = _key_problem(self._key)
        if problem:
            return ConnectionCheck(False, None, problem[1])
        day = datetime.now(UTC).date() - timedelta(days=1)
        query: list[tuple[str, str | int]] = [
            ("start_time", _midnight(day)),
            ("end_time", _midnight(day) + _DAY),
            ("bucket_width", "1d"),
            ("limit", 1),
        ]
        self.organization_id = None
        try:
            for _ in self._fetch_page(query):
                pass
        except CostsApiError as exc:
            return ConnectionCheck(False, self.organization_id, str(exc))
        org = self.organization_id
        where = f"OpenAI organization {org}" if org else "the OpenAI organization"
        return ConnectionCheck(True, org, f"Connected to {where}: the admin key can read costs.")

    def iter_projects(self) -> Iterator[NameRecord]:
        """Every project (archived ones too, so a spend row keeps its name); 403 raises
        PermissionDeniedError."""
        for item in self._names(PROJECTS_PATH, "projects"):
            yield _project_record(item)

    def iter_api_keys(self) -> Iterator[NameRecord]:
        """Every project's API keys (name, redacted value, owner); 403 raises
        PermissionDeniedError."""
        for project in list(self.iter_projects()):
            path = f"{PROJECTS_PATH}/{project.id}/api_keys"
            for item in self._names(path, "project API keys"):
                record = _api_key_record(item, project.id)
                if record is not None:
                    yield record

    # ----------------------------------------------------------------- paging

    def _names(self, path: str, what: str) -> Iterator[dict[str, Any]]:
        problem = _key_problem(self._key)
        if problem:
            raise problem[0](problem[1])
        params: list[tuple[str, str | int]] = [("limit", NAMES_PAGE_SIZE)]
        if path == PROJECTS_PATH:
            params.append(("include_archived", "true"))
        try:
            yield from self._iter_list(path, params, "after")
        except PermissionDeniedError as exc:
            raise self._names_denied(exc, what) from None

    def _pages(self, query: list[tuple[str, str | int]], max_pages: int) -> Iterator[CostBucket]:
        return self._cursor_pages(query, max_pages, self._fetch_page)

    def _fetch_page(
        self, params: list[tuple[str, str | int]]
    ) -> Generator[CostBucket, None, tuple[bool, str | None]]:
        """One page, retried as needed. A retry after a body broke off mid-page re-requests
        the same page and skips the buckets (by start_time) already yielded from it."""
        yielded: set[int] = set()

        def read(
            response: httpx.Response, attempt: int
        ) -> Generator[CostBucket, None, tuple[bool, str | None]]:
            return self._read_page(response, yielded, attempt > 1)

        return (yield from self._send(COSTS_PATH, params, read))

    def _read_page(
        self, response: httpx.Response, yielded: set[int], retrying: bool
    ) -> Generator[CostBucket, None, tuple[bool, str | None]]:
        request_id = response.headers.get("x-request-id")
        self.organization_id = response.headers.get("openai-organization") or self.organization_id
        # Small sizes (tests) re-chunk the stream; big ones take the network's reads as they come
        # (httpx re-chunking would copy every byte once more).
        reader = PageReader(
            response.iter_bytes(CHUNK_SIZE if CHUNK_SIZE < 65536 else None), CHUNK_SIZE
        )
        try:
            for bucket in reader.buckets():
                if retrying and bucket.start_time in yielded:
                    continue
                yielded.add(bucket.start_time)
                yield bucket
            return reader.page_info()
        except PageFormatError as exc:
            raise MalformedResponseError(
                self._malformed(str(exc), request_id),
                status=response.status_code,
                request_id=request_id,
            ) from None

    # ----------------------------------------------------------------- errors

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"}

    def mask(self, key: str) -> str:
        return mask_key(key)

    def _error_details(self, body: bytes) -> tuple[str | None, str | None]:
        return error_details(body, "code")

    def _classify(self, status: int, message: str) -> tuple[type[CostsApiError], str]:
        return status_kind(status, denied="Missing scopes" in message)

    def _message_values(self, status: int, code: str | None, message: str) -> dict[str, Any]:
        values = super()._message_values(status, code, message)
        values.update(code=values["code"] or "invalid_api_key", url=ADMIN_KEYS_URL)
        return values


def _text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) else None


def _project_record(item: dict[str, Any]) -> NameRecord:
    project_id = _text(item, "id")
    if project_id is None:
        raise MalformedResponseError("OpenAI listed a project without an id: report it.")
    status = _text(item, "status") or ("archived" if item.get("archived_at") else "active")
    return NameRecord("project", project_id, _text(item, "name"), status, None, None)


def _api_key_record(item: dict[str, Any], project_id: str) -> NameRecord | None:
    key_id = _text(item, "id")
    if key_id is None:
        return None
    owner = item.get("owner") if isinstance(item.get("owner"), dict) else {}
    who = owner.get(owner.get("type") or "user") or owner.get("service_account")
    owner_name = _text(who, "name") if isinstance(who, dict) else None
    return NameRecord(
        "api_key",
        key_id,
        _text(item, "name"),
        "active",  # the endpoint lists the keys that exist; a deleted key is gone from it
        project_id,
        _text(item, "redacted_value"),
        owner_name,
    )
