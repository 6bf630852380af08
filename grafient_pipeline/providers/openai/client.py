"""A small, exact, memory-bounded client for the OpenAI Admin Costs API (httpx, sync).

``CostsClient.iter_buckets`` streams each page and parses it incrementally, so memory stays around
one day bucket plus one read chunk whatever the page size. Amounts are ``Decimal`` read from the
JSON text (numbers or numeric strings), never floats. Retries follow the official SDK (408, 409,
429, 5xx and transport errors, honouring ``retry-after-ms``, ``Retry-After`` and
``x-should-retry``); 400/401/403 are never retried. Error messages never contain the key.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
import ssl
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx

from grafient_pipeline.providers.base import (
    BadRequestError,
    ConnectionCheck,
    CostBucket,
    CostsApiError,
    InvalidKeyError,
    MalformedResponseError,
    PermissionDeniedError,
    RateLimitedError,
    UpstreamError,
)
from grafient_pipeline.providers.openai.costs_page import PageFormatError, PageReader

GROUP_BY = ("line_item", "project_id", "api_key_id")
COSTS_PATH = "organization/costs"
MAX_PAGE_SIZE = 180
CHUNK_SIZE = 256 * 1024  # bytes per read; tests monkeypatch this down to a few bytes
MAX_ERROR_BODY = 64 * 1024
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 8.0
ADMIN_KEYS_URL = "https://platform.openai.com/settings/organization/admin-keys"
_DAY = 86_400
_RETRY_STATUSES = frozenset({408, 409, 429})
_NEVER_RETRY = frozenset({400, 401, 403})


def mask_key(key: str) -> str:
    """``sk-admin-...abcd``: the kind of key and its last four characters, never more."""
    prefix = next(
        (p for p in ("sk-admin-", "sk-proj-", "sk-svcacct-", "sk-") if key.startswith(p)), ""
    )
    rest = key[len(prefix) :]
    return f"{prefix}...{rest[-4:]}" if len(rest) >= 12 else f"{prefix}..."


_SK_TOKEN = re.compile(r"sk-[A-Za-z0-9_*\-]+")
_PRINTABLE_KEY = re.compile(r"[\x21-\x7e]+")


def _key_problem(key: str) -> tuple[type[CostsApiError], str] | None:
    """Why a key cannot be an admin key, judged from its text alone (None: it may be fine)."""
    where = f"an Organization Owner creates one (Read only) at {ADMIN_KEYS_URL}"
    if not key.strip():
        return (
            InvalidKeyError,
            f"No admin key was given: paste an OpenAI admin key (sk-admin-...); {where}.",
        )
    if not _PRINTABLE_KEY.fullmatch(key):
        return (
            InvalidKeyError,
            "The admin key contains spaces or unusual characters: copy it again.",
        )
    if key.startswith("sk-admin-"):
        return None
    if key.startswith("sk-"):
        return PermissionDeniedError, (
            f"This is a project or user API key ({mask_key(key)}), which cannot read costs: "
            f"use an admin key (sk-admin-...); {where}."
        )
    return InvalidKeyError, (
        f"This does not look like an OpenAI admin key (they start with sk-admin-); {where}."
    )


# --------------------------------------------------------------------------- HTTP client


@dataclass(frozen=True)
class _Failure:
    """One failed attempt: what to raise if we stop, and whether/when to try again."""

    kind: type[CostsApiError]
    head: str  # message = head + " after N attempts" (when retried) + tail + request id
    tail: str
    status: int | None
    request_id: str | None
    retryable: bool
    wait_hint: float | None = None  # seconds the server asked us to wait

    def error(self, after: str) -> CostsApiError:
        retried = f" {after}" if self.retryable else ""
        message = f"{self.head}{retried}{self.tail}{_rid(self.request_id)}."
        return self.kind(message, status=self.status, request_id=self.request_id)


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _http_date(text: str | None) -> float | None:
    if not text:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asked for (retry-after-ms, then Retry-After seconds or HTTP date)."""
    millis = _seconds(headers.get("retry-after-ms", ""))
    if millis is not None:
        return millis / 1000
    raw = headers.get("retry-after", "")
    seconds = _seconds(raw)
    if seconds is not None:
        return seconds
    when = _http_date(raw)
    if when is None:
        return None
    now = _http_date(headers.get("date")) or time.time()
    return max(0.0, when - now)


def _error_details(body: bytes) -> tuple[str | None, str | None]:
    """(code, message) of an OpenAI error body, when it has that shape."""
    try:
        error = json.loads(body.decode("utf-8", "replace"))["error"]
        code, message = error.get("code"), error.get("message")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
        return None, None
    return (code if isinstance(code, str) else None, message if isinstance(message, str) else None)


def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= MAX_ERROR_BODY:
                break
    except (httpx.TransportError, httpx.DecodingError):
        pass  # an error body we cannot read fully still has its status
    return bytes(body[:MAX_ERROR_BODY])


def _midnight(day: date) -> int:
    return (day.toordinal() - date(1970, 1, 1).toordinal()) * _DAY


def _rid(request_id: str | None) -> str:
    return f" (request {request_id})" if request_id else ""


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


def _status_kind(status: int, message: str) -> tuple[type[CostsApiError], str]:
    if status == 401 and "Missing scopes" not in message:
        return InvalidKeyError, "invalid_key"
    if status in (401, 403):
        return PermissionDeniedError, "denied"
    if status == 400:
        return BadRequestError, "bad_request"
    if status == 429:
        return RateLimitedError, "rate_limited"
    if status >= 500 or status in _RETRY_STATUSES:
        return UpstreamError, "upstream"
    if status == 404:
        return CostsApiError, "not_found"
    return CostsApiError, "other"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once: loading the CA bundle takes about 25 ms,
    which a daily sync of many integrations would pay per integration."""
    return httpx.create_ssl_context()


class CostsClient:
    """Reads daily cost buckets; one instance per organization (admin key)."""

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.openai.com/v1",
        *,
        page_size: int = MAX_PAGE_SIZE,
        timeout: float = 60.0,
        max_attempts: int = 6,
        max_total_wait: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._key = api_key
        self.base_url = base_url.rstrip("/")
        self._page_size = page_size
        self._max_attempts = max_attempts
        self._max_total_wait = max_total_wait
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            timeout=timeout,
            transport=transport,
            verify=_tls_context(),
            headers={"Accept": "application/json", "User-Agent": "grafient-pipeline"},
        )
        self.request_count = 0
        self.retry_count = 0
        self.organization_id: str | None = None  # from the last successful response

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CostsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    # ----------------------------------------------------------------- paging and retries

    def _pages(self, query: list[tuple[str, str | int]], max_pages: int) -> Iterator[CostBucket]:
        cursors: set[str] = set()
        cursor: str | None = None
        for _ in range(max_pages):
            params = query if cursor is None else [*query, ("page", cursor)]
            has_more, cursor = yield from self._fetch_page(params)
            if not has_more:
                return
            if cursor in cursors:
                raise MalformedResponseError(self._malformed("next_page repeats an earlier cursor"))
            cursors.add(cursor)  # type: ignore[arg-type]
        raise MalformedResponseError(self._malformed("it kept returning more pages"))

    def _fetch_page(
        self, params: list[tuple[str, str | int]]
    ) -> Generator[CostBucket, None, tuple[bool, str | None]]:
        """One page, retried as needed. A retry after a body broke off mid-page re-requests
        the same page and skips the buckets (by start_time) already yielded from it."""
        yielded: set[int] = set()
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            self.request_count += 1
            try:
                with self._http.stream(
                    "GET", COSTS_PATH, params=params, headers=self._auth()
                ) as response:
                    if response.is_success:
                        return (yield from self._read_page(response, yielded, attempt > 1))
                    failure = self._status_failure(response)
            except (httpx.TransportError, httpx.DecodingError) as exc:
                failure = self._transport_failure(exc)
            waited = self._backoff(failure, attempt, waited)

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

    def _backoff(self, failure: _Failure, attempt: int, waited: float) -> float:
        """Sleep before the next attempt and return the total waited, or raise the failure."""
        tries = f"after {attempt} attempt{'s' if attempt > 1 else ''}"
        remaining = self._max_total_wait - waited
        if not failure.retryable or attempt >= self._max_attempts or remaining <= 0:
            raise failure.error(tries)
        if failure.wait_hint is not None:
            if failure.wait_hint > remaining:
                raise failure.error(
                    f"{tries} (it asked to wait {failure.wait_hint:.0f} s, more than the "
                    f"{self._max_total_wait:.0f} s retry budget)"
                )
            delay = failure.wait_hint
        else:
            ceiling = min(MAX_BACKOFF, INITIAL_BACKOFF * 2 ** (attempt - 1))
            delay = min(self._rng.uniform(0, ceiling), remaining)  # full jitter
        self.retry_count += 1
        self._sleep(delay)
        return waited + delay

    # ----------------------------------------------------------------- errors

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"}

    def _scrub(self, text: str | None, limit: int = 300) -> str:
        """Server or library text made safe to show: no key, no sk- token, one short line."""
        text = text or ""
        if len(self._key) >= 8:
            text = text.replace(self._key, mask_key(self._key))
        text = " ".join(_SK_TOKEN.sub("sk-***", text).split())
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def _malformed(self, detail: str, request_id: str | None = None) -> str:
        return (
            f"OpenAI's Costs API at {self.base_url} sent a response that cannot be read "
            f"({detail}): try again later and report it if it persists{_rid(request_id)}."
        )

    def _transport_failure(self, exc: Exception) -> _Failure:
        detail = self._scrub(str(exc), 200)
        what = type(exc).__name__ + (f": {detail}" if detail else "")
        head = f"Could not get a complete response from the Costs API at {self.base_url}"
        tail = f" ({what}): check the network connection and the base URL"
        retryable = not isinstance(exc, httpx.UnsupportedProtocol)  # a bad base URL stays bad
        return _Failure(UpstreamError, head, tail, None, None, retryable)

    def _status_failure(self, response: httpx.Response) -> _Failure:
        status = response.status_code
        headers = response.headers
        code, message = _error_details(_read_capped(response))
        retryable = status in _RETRY_STATUSES or status >= 500
        should_retry = headers.get("x-should-retry", "").strip().lower()
        if status not in _NEVER_RETRY and should_retry in ("true", "false"):
            retryable = should_retry == "true"
        kind, head, tail = self._describe(status, code, self._scrub(message))
        hint = _retry_after(headers) if retryable else None
        return _Failure(kind, head, tail, status, headers.get("x-request-id"), retryable, hint)

    def _describe(
        self, status: int, code: str | None, message: str
    ) -> tuple[type[CostsApiError], str, str]:
        """Error class, head and tail of the message (the retry clause goes between them)."""
        kind, name = _status_kind(status, message)
        head, tail = _STATUS_MESSAGES[name]
        values = {
            "status": status,
            "said": f": {message}" if message else "",
            "mask": mask_key(self._key),
            "code": self._scrub(code) or "invalid_api_key",
            "url": ADMIN_KEYS_URL,
            "path": COSTS_PATH,
            "base": self.base_url,
        }
        return kind, head.format(**values), tail.format(**values)
