"""What every provider's HTTP client shares: retries, backoff and errors that are safe to show.

:class:`ApiClient` holds one admin key against one API (httpx, sync). Retries follow the
official SDKs (408, 409, 429, 5xx and transport errors, honouring ``retry-after-ms``,
``Retry-After`` and ``x-should-retry``) within a budget of attempts and seconds; 400/401/403 are
never retried. Every failure becomes one typed :class:`CostsApiError` whose message never holds
the key. A provider's client subclasses it with its authentication headers, its error body shape
and its messages (a table of (head, tail) pairs by failure name).
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
import ssl
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, TypeVar

import httpx

from grafient_pipeline.providers.base import (
    BadRequestError,
    CostsApiError,
    InvalidKeyError,
    MalformedResponseError,
    PermissionDeniedError,
    RateLimitedError,
    UpstreamError,
)

MAX_ERROR_BODY = 64 * 1024
MAX_JSON_BODY = 64 * 1024 * 1024  # a whole-body JSON answer (a names page) beyond: malformed
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 8.0
MAX_LIST_PAGES = 10_000
RETRY_STATUSES = frozenset({408, 409, 429})
NEVER_RETRY = frozenset({400, 401, 403})
TRANSPORT_ERRORS = (httpx.TransportError, httpx.DecodingError)
Params = list[tuple[str, str | int]]
T = TypeVar("T")
Y = TypeVar("Y")

_SK_TOKEN = re.compile(r"sk-[A-Za-z0-9_*\-]+")
PRINTABLE_KEY = re.compile(r"[\x21-\x7e]+")


def mask_key(key: str, prefixes: tuple[str, ...]) -> str:
    """``<prefix>...abcd``: the kind of key (the first of ``prefixes`` it starts with) and its
    last four characters, never more."""
    prefix = next((p for p in prefixes if key.startswith(p)), "")
    rest = key[len(prefix) :]
    return f"{prefix}...{rest[-4:]}" if len(rest) >= 12 else f"{prefix}..."


class PageFormatError(Exception):
    """Internal: what is wrong with a costs page body; a client turns it into
    MalformedResponseError."""


def page_cursor(has_more: Any, next_page: Any) -> tuple[bool, str | None]:
    """(has_more, next cursor) of a costs page, checked; raises PageFormatError."""
    if has_more is None and next_page:
        has_more = True  # a null has_more beside a cursor: follow it rather than drop pages
    if has_more is not None and type(has_more) is not bool:
        raise PageFormatError("has_more is not a boolean")
    if has_more and (type(next_page) is not str or not next_page):
        raise PageFormatError("has_more is true but next_page is not a cursor")
    return bool(has_more), next_page if has_more else None


def key_problem(
    key: str, *, vendor: str, admin_prefix: str, other_keys: tuple[str, str], where: str, mask: str
) -> tuple[type[CostsApiError], str] | None:
    """Why a key cannot be an admin key, judged from its text alone (None: it may be fine).
    ``other_keys`` is (the prefix of the vendor's other keys, what such a key is); ``where``
    says where an admin key is created; ``mask`` is the key as it may be shown."""
    if not key.strip():
        return (
            InvalidKeyError,
            f"No admin key was given: paste an {vendor} admin key ({admin_prefix}...); {where}.",
        )
    if not PRINTABLE_KEY.fullmatch(key):
        return (
            InvalidKeyError,
            "The admin key contains spaces or unusual characters: copy it again.",
        )
    if key.startswith(admin_prefix):
        return None
    other_prefix, other_kind = other_keys
    if key.startswith(other_prefix):
        return PermissionDeniedError, (
            f"This is {other_kind} ({mask}), which cannot read costs: "
            f"use an admin key ({admin_prefix}...); {where}."
        )
    return InvalidKeyError, (
        f"This does not look like an {vendor} admin key (they start with {admin_prefix}); {where}."
    )


@dataclass(frozen=True)
class Failure:
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
        message = f"{self.head}{retried}{self.tail}{rid(self.request_id)}."
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


def retry_after(headers: httpx.Headers) -> float | None:
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


def error_details(body: bytes, code_field: str) -> tuple[str | None, str | None]:
    """(code, message) of an ``{"error": {code_field: ..., "message": ...}}`` body, when it has
    that shape (OpenAI names the code ``code``, Anthropic ``type``)."""
    try:
        error = json.loads(body.decode("utf-8", "replace"))["error"]
        code, message = error.get(code_field), error.get("message")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
        return None, None
    return (code if isinstance(code, str) else None, message if isinstance(message, str) else None)


def read_capped(response: httpx.Response, limit: int = MAX_ERROR_BODY) -> bytes:
    body = bytearray()
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= limit:
                break
    except TRANSPORT_ERRORS:
        pass  # an error body we cannot read fully still has its status
    return bytes(body[:limit])


def rid(request_id: str | None) -> str:
    return f" (request {request_id})" if request_id else ""


def status_kind(status: int, *, denied: bool = False) -> tuple[type[CostsApiError], str]:
    """The error class and message name of an HTTP status (``denied``: a 401 that says the key
    lacks a permission, not that it is wrong)."""
    if status == 401 and not denied:
        return InvalidKeyError, "invalid_key"
    if status in (401, 403):
        return PermissionDeniedError, "denied"
    if status == 400:
        return BadRequestError, "bad_request"
    if status == 429:
        return RateLimitedError, "rate_limited"
    if status >= 500 or status in RETRY_STATUSES:
        return UpstreamError, "upstream"
    if status == 404:
        return CostsApiError, "not_found"
    return CostsApiError, "other"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once: loading the CA bundle takes about 25 ms,
    which a daily sync of many integrations would pay per integration."""
    return httpx.create_ssl_context()


def run_to_value(steps: Generator[Any, None, T]) -> T:
    """The return value of a generator that yields nothing worth keeping."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


class ApiClient:
    """One admin key against one API: the retry loop and its errors.

    Subclasses set ``api_name``, ``vendor``, ``messages``, ``request_id_header`` and implement
    ``_auth``, ``mask`` and ``_error_details``; ``_classify`` and ``_message_values`` may be
    refined.
    """

    api_name: ClassVar[str]  # "the Costs API": where a transport failure happened
    vendor: ClassVar[str]  # "OpenAI": who answered
    messages: ClassVar[Mapping[str, tuple[str, str]]]  # failure name -> (head, tail)
    request_id_header: ClassVar[str] = "x-request-id"
    extra_headers: ClassVar[Mapping[str, str]] = {}
    max_page_size: ClassVar[int] = 1  # buckets a costs page may hold

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        page_size: int | None = None,
        timeout: float = 60.0,
        max_attempts: int = 6,
        max_total_wait: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        page_size = self.max_page_size if page_size is None else page_size
        if not 1 <= page_size <= self.max_page_size:
            raise ValueError(f"page_size must be 1..{self.max_page_size}, not {page_size}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._key = api_key
        self._page_size = page_size
        self.base_url = base_url.rstrip("/")
        self._max_attempts = max_attempts
        self._max_total_wait = max_total_wait
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            timeout=timeout,
            transport=transport,
            verify=tls_context(),
            headers={
                "Accept": "application/json",
                "User-Agent": "grafient-pipeline",
                **self.extra_headers,
            },
        )
        self.request_count = 0
        self.retry_count = 0
        self._path = ""  # of the request being made (for messages)
        self.organization_id: str | None = None  # as the last answer named it

    def close(self) -> None:
        self._http.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- provider hooks

    def _auth(self) -> dict[str, str]:
        raise NotImplementedError

    def mask(self, key: str) -> str:
        raise NotImplementedError

    def _error_details(self, body: bytes) -> tuple[str | None, str | None]:
        raise NotImplementedError

    def _classify(self, status: int, message: str) -> tuple[type[CostsApiError], str]:
        return status_kind(status)

    def _message_values(self, status: int, code: str | None, message: str) -> dict[str, Any]:
        return {
            "status": status,
            "said": f": {message}" if message else "",
            "mask": self.mask(self._key),
            "base": self.base_url,
            "path": self._path,
            "code": self._scrub(code),
        }

    # ----------------------------------------------------------------- requests and retries

    def _send(
        self,
        path: str,
        params: Params,
        read: Callable[[httpx.Response, int], Generator[Y, None, T]],
    ) -> Generator[Y, None, T]:
        """GET ``path``, retried as needed; a success is handed to ``read(response, attempt)``,
        whose yields pass through and whose return value is returned. A transport error while
        ``read`` streams the body is retried like any other."""
        self._path = path
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            self.request_count += 1
            try:
                with self._http.stream(
                    "GET", path, params=params, headers=self._auth()
                ) as response:
                    if response.is_success:
                        return (yield from read(response, attempt))
                    failure = self._status_failure(response)
            except TRANSPORT_ERRORS as exc:
                failure = self._transport_failure(exc)
            waited = self._backoff(failure, attempt, waited)

    def _read_body(self, response: httpx.Response, limit: int = MAX_JSON_BODY) -> bytes:
        """A success's whole body, refused (malformed) beyond ``limit`` bytes."""
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise MalformedResponseError(self._malformed("the body is too large"))
        return bytes(body)

    def _get_json(self, path: str, params: Params) -> tuple[Any, httpx.Headers]:
        """A small JSON answer, whole, and its headers."""

        def read(response: httpx.Response, attempt: int) -> Generator[None, None, Any]:
            body = self._read_body(response)
            try:
                return json.loads(body.decode("utf-8")), response.headers
            except (ValueError, RecursionError):
                request_id = response.headers.get(self.request_id_header)
                raise MalformedResponseError(
                    self._malformed("the body is not valid JSON", request_id),
                    status=response.status_code,
                    request_id=request_id,
                ) from None
            yield  # pragma: no cover  (makes this a generator)

        return run_to_value(self._send(path, params, read))

    def _cursor_pages(
        self,
        query: Params,
        max_pages: int,
        fetch: Callable[[Params], Generator[Y, None, tuple[bool, str | None]]],
    ) -> Iterator[Y]:
        """What ``fetch(params)`` yields for each page of a ``page``-cursor paged query; it
        returns (has_more, next cursor). A repeated cursor or too many pages is malformed."""
        cursors: set[str] = set()
        cursor: str | None = None
        for _ in range(max_pages):
            params = query if cursor is None else [*query, ("page", cursor)]
            has_more, cursor = yield from fetch(params)
            if not has_more:
                return
            if cursor in cursors:
                raise MalformedResponseError(self._malformed("next_page repeats an earlier cursor"))
            cursors.add(cursor)  # type: ignore[arg-type]
        raise MalformedResponseError(self._malformed("it kept returning more pages"))

    def _iter_list(self, path: str, params: Params, after_param: str) -> Iterator[dict[str, Any]]:
        """The objects of a list endpoint paged with ``has_more`` and an ``after`` id
        (``last_id``, else the last object's ``id``)."""
        seen: set[str] = set()
        after: str | None = None
        for _ in range(MAX_LIST_PAGES):
            query = params if after is None else [*params, (after_param, after)]
            body, _ = self._get_json(path, query)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise MalformedResponseError(self._malformed(f"{path} has no data list"))
            yield from (item for item in data if isinstance(item, dict))
            if body.get("has_more") is not True:
                return
            last = body.get("last_id") or (data[-1].get("id") if data else None)
            if not isinstance(last, str) or not last or last in seen:
                raise MalformedResponseError(self._malformed(f"{path} does not say where to go on"))
            seen.add(last)
            after = last
        raise MalformedResponseError(self._malformed(f"{path} kept returning more pages"))

    def _backoff(self, failure: Failure, attempt: int, waited: float) -> float:
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

    def _scrub(self, text: str | None, limit: int = 300) -> str:
        """Server or library text made safe to show: no key, no sk- token, one short line."""
        text = text or ""
        if len(self._key) >= 8:
            text = text.replace(self._key, self.mask(self._key))
        text = " ".join(_SK_TOKEN.sub("sk-***", text).split())
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def _malformed(self, detail: str, request_id: str | None = None) -> str:
        return (
            f"{self.vendor}'s {self.api_name.removeprefix('the ')} at {self.base_url} sent a "
            f"response that cannot be read ({detail}): try again later and report it if it "
            f"persists{rid(request_id)}."
        )

    def _transport_failure(self, exc: Exception) -> Failure:
        detail = self._scrub(str(exc), 200)
        what = type(exc).__name__ + (f": {detail}" if detail else "")
        head = f"Could not get a complete response from {self.api_name} at {self.base_url}"
        tail = f" ({what}): check the network connection and the base URL"
        retryable = not isinstance(exc, httpx.UnsupportedProtocol)  # a bad base URL stays bad
        return Failure(UpstreamError, head, tail, None, None, retryable)

    def _status_failure(self, response: httpx.Response) -> Failure:
        status = response.status_code
        headers = response.headers
        code, message = self._error_details(read_capped(response))
        retryable = status in RETRY_STATUSES or status >= 500
        should_retry = headers.get("x-should-retry", "").strip().lower()
        if status not in NEVER_RETRY and should_retry in ("true", "false"):
            retryable = should_retry == "true"
        kind, head, tail = self._describe(status, code, self._scrub(message))
        hint = retry_after(headers) if retryable else None
        request_id = headers.get(self.request_id_header)
        return Failure(kind, head, tail, status, request_id, retryable, hint)

    def _describe(
        self, status: int, code: str | None, message: str
    ) -> tuple[type[CostsApiError], str, str]:
        """Error class, head and tail of the message (the retry clause goes between them)."""
        kind, name = self._classify(status, message)
        head, tail = self.messages[name]
        values = self._message_values(status, code, message)
        return kind, head.format(**values), tail.format(**values)

    def _names_denied(self, error: PermissionDeniedError, what: str) -> PermissionDeniedError:
        """A 403 on a names endpoint: its own message (names are skipped, costs still sync)."""
        return PermissionDeniedError(
            f"{self.vendor} refused to list {what} to this key ({error.status or 403}): "
            "the names are skipped and costs still sync; a key with read access to the "
            f"organization's {what} shows them{rid(error.request_id)}.",
            status=error.status,
            request_id=error.request_id,
        )
