"""A small, exact client for Anthropic's Admin API cost report (httpx, sync).

``AnthropicCostsClient.iter_buckets`` reads ``GET /v1/organizations/cost_report`` (daily buckets
grouped by workspace and description, at most 31 buckets a page, one page in memory at a time)
and yields the shared CostBuckets: amounts are the API's cents moved to exact USD text, each
result's original JSON kept. Retries and errors are the providers' shared ones
(:mod:`grafient_pipeline.providers.http`); error messages never contain the key.
``iter_projects`` (workspaces) and ``iter_api_keys`` read the names the costs name by id.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar

import httpx

from grafient_pipeline.providers.anthropic.cost_page import PageFormatError, parse_page
from grafient_pipeline.providers.base import (
    ConnectionCheck,
    CostBucket,
    CostsApiError,
    MalformedResponseError,
    NameRecord,
    PermissionDeniedError,
)
from grafient_pipeline.providers.http import (
    ApiClient,
    Params,
    error_details,
    key_problem,
    mask_key,
)

ANTHROPIC_VERSION = "2023-06-01"
COST_REPORT_PATH = "organizations/cost_report"
ME_PATH = "organizations/me"
WORKSPACES_PATH = "organizations/workspaces"
API_KEYS_PATH = "organizations/api_keys"
GROUP_BY = ("workspace_id", "description")
MAX_PAGE_SIZE = 31  # buckets a page: the endpoint's maximum for 1d buckets
MAX_PAGE_BYTES = 256 * 1024 * 1024
NAMES_PAGE_SIZE = 100
ADMIN_KEY_PREFIX = "sk-ant-admin"
ADMIN_KEYS_URL = "https://platform.claude.com/settings/admin-keys"
_KEY_PREFIXES = ("sk-ant-admin01-", "sk-ant-admin", "sk-ant-api03-", "sk-ant-api", "sk-ant-", "sk-")

_STATUS_MESSAGES: dict[str, tuple[str, str]] = {  # name -> (head, tail) of the message
    "invalid_key": (
        "Anthropic rejected the admin key {mask}",
        " (401 {code}): it is wrong or was revoked, so create a new admin key at {url}"
        " and update the integration",
    ),
    "denied": (
        "Anthropic refused to show costs to this key",
        " ({status}{said}): reading costs needs an Admin API key (sk-ant-admin...), which an"
        " organization admin creates at {url}",
    ),
    "bad_request": (
        "Anthropic rejected the cost report request as invalid",
        " (400{said}): check the requested dates, and report it if it persists",
    ),
    "rate_limited": (
        "Anthropic kept rate-limiting the cost report requests (429{said})",
        ": wait a few minutes and sync again",
    ),
    "upstream": (
        "Anthropic's Admin API kept failing (HTTP {status}{said})",
        ": Anthropic may be having trouble, so try again later",
    ),
    "not_found": (
        "Anthropic answered 404 Not Found for {path}",
        " at {base}: check the base URL (GRAFIENT_ANTHROPIC_BASE_URL)",
    ),
    "other": (
        "Anthropic's Admin API answered an unexpected HTTP {status}{said}",
        ": check the base URL and try again later",
    ),
}


def mask_anthropic_key(key: str) -> str:
    """``sk-ant-admin01-...abcd``: the kind of key and its last four characters, never more."""
    return mask_key(key, _KEY_PREFIXES)


def _key_problem(key: str) -> tuple[type[CostsApiError], str] | None:
    """Why a key cannot be an Admin API key, judged from its text alone (None: it may be)."""
    return key_problem(
        key,
        vendor="Anthropic",
        admin_prefix=ADMIN_KEY_PREFIX,
        other_keys=("sk-ant-", "a regular Anthropic API key"),
        where=f"an organization admin creates one in the Claude Console at {ADMIN_KEYS_URL}",
        mask=mask_anthropic_key(key),
    )


def rfc3339(day: date) -> str:
    """Midnight UTC of ``day`` as the API wants it: ``2026-11-01T00:00:00Z``."""
    return datetime.combine(day, time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AnthropicCostsClient(ApiClient):
    """Reads daily cost buckets; one instance per organization (Admin API key)."""

    api_name = "the Admin API"
    vendor = "Anthropic"
    messages = _STATUS_MESSAGES
    request_id_header = "request-id"
    extra_headers: ClassVar[Mapping[str, str]] = {"anthropic-version": ANTHROPIC_VERSION}
    max_page_size = MAX_PAGE_SIZE

    def __init__(
        self, api_key: str, base_url: str = "https://api.anthropic.com/v1", **options: Any
    ) -> None:
        """``options``: page_size (buckets, 1..31), timeout, max_attempts, max_total_wait,
        sleep, transport, rng (see :class:`ApiClient`)."""
        super().__init__(api_key, base_url, **options)

    # ----------------------------------------------------------------- public calls

    def iter_buckets(self, start: date, end: date) -> Iterator[CostBucket]:
        """Daily buckets for UTC days ``start..end`` (inclusive), a page at a time."""
        self._check_key()
        days = end.toordinal() - start.toordinal() + 1
        if days < 1:
            raise ValueError(f"end {end} is before start {start}")
        return self._cursor_pages(self._query(start, end), 2 * days + 10, self._fetch_page)

    def test_connection(self) -> ConnectionCheck:
        """Check the key's shape, read the organization, then one cheap cost report request."""
        problem = _key_problem(self._key)
        if problem:
            return ConnectionCheck(False, None, problem[1])
        day = datetime.now(UTC).date() - timedelta(days=1)
        try:
            org, name = self._organization()
            for _ in self._fetch_page(self._query(day, day, limit=1)):
                pass
        except CostsApiError as exc:
            return ConnectionCheck(False, None, str(exc))
        self.organization_id = org
        where = "the Anthropic organization"
        if org:
            where = f"Anthropic organization {name} ({org})" if name else f"{where} {org}"
        return ConnectionCheck(True, org, f"Connected to {where}: the admin key can read costs.")

    def iter_projects(self) -> Iterator[NameRecord]:
        """Every workspace (archived ones too); the default workspace has no id and is not
        listed (its costs carry workspace_id null). 403 raises PermissionDeniedError."""
        params: Params = [("limit", NAMES_PAGE_SIZE), ("include_archived", "true")]
        for item in self._names(WORKSPACES_PATH, params, "workspaces"):
            workspace_id = _text(item, "id")
            if workspace_id is None:
                continue
            status = "archived" if item.get("archived_at") else "active"
            yield NameRecord("project", workspace_id, _text(item, "name"), status, None, None)

    def iter_api_keys(self) -> Iterator[NameRecord]:
        """Every API key: name, status, workspace and the partial hint the API shows (never
        more). 403 raises PermissionDeniedError."""
        params: Params = [("limit", NAMES_PAGE_SIZE)]
        for item in self._names(API_KEYS_PATH, params, "API keys"):
            key_id = _text(item, "id")
            if key_id is None:
                continue
            yield NameRecord(
                "api_key",
                key_id,
                _text(item, "name"),
                _text(item, "status"),
                _text(item, "workspace_id"),
                _text(item, "partial_key_hint"),
            )

    # ----------------------------------------------------------------- requests

    def _check_key(self) -> None:
        problem = _key_problem(self._key)
        if problem:
            raise problem[0](problem[1])

    def _query(self, start: date, end: date, limit: int | None = None) -> Params:
        days = end.toordinal() - start.toordinal() + 1
        query: Params = [
            ("starting_at", rfc3339(start)),
            ("ending_at", rfc3339(end + timedelta(days=1))),
            ("bucket_width", "1d"),
            ("limit", limit or min(self._page_size, days)),
        ]
        return query + [("group_by[]", dimension) for dimension in GROUP_BY]

    def _fetch_page(self, params: Params) -> Generator[CostBucket, None, tuple[bool, str | None]]:
        """One page, retried as needed; read whole (it is at most 31 buckets), then yielded."""

        def read(
            response: httpx.Response, attempt: int
        ) -> Generator[None, None, tuple[list[CostBucket], bool, str | None]]:
            body = self._read_body(response, MAX_PAGE_BYTES)
            request_id = response.headers.get(self.request_id_header)
            try:
                return parse_page(body.decode("utf-8"))
            except (PageFormatError, UnicodeDecodeError) as exc:
                detail = "the body is not valid UTF-8" if isinstance(exc, ValueError) else exc
                raise MalformedResponseError(
                    self._malformed(str(detail), request_id),
                    status=response.status_code,
                    request_id=request_id,
                ) from None
            yield  # pragma: no cover  (makes this a generator)

        buckets, has_more, cursor = yield from self._send(COST_REPORT_PATH, params, read)
        yield from buckets
        return has_more, cursor

    def _organization(self) -> tuple[str | None, str | None]:
        """(id, name) of the key's organization; (None, None) where the API has no such call."""
        try:
            body, _ = self._get_json(ME_PATH, [])
        except CostsApiError as exc:
            if exc.status == 404:
                return None, None
            raise
        if not isinstance(body, dict):
            return None, None
        return _text(body, "id"), _text(body, "name")

    def _names(self, path: str, params: Params, what: str) -> Iterator[dict[str, Any]]:
        self._check_key()
        try:
            yield from self._iter_list(path, params, "after_id")
        except PermissionDeniedError as exc:
            raise self._names_denied(exc, what) from None

    # ----------------------------------------------------------------- errors

    def _auth(self) -> dict[str, str]:
        return {"x-api-key": self._key}

    def mask(self, key: str) -> str:
        return mask_anthropic_key(key)

    def _error_details(self, body: bytes) -> tuple[str | None, str | None]:
        return error_details(body, "type")  # {"type":"error","error":{"type":...,"message":...}}

    def _message_values(self, status: int, code: str | None, message: str) -> dict[str, Any]:
        values = super()._message_values(status, code, message)
        values.update(code=values["code"] or "authentication_error", url=ADMIN_KEYS_URL)
        return values


def _text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) else None
