"""A small, exact, memory-bounded client for the OpenAI Admin Costs API (httpx, sync).

``CostsClient.iter_buckets`` streams each page and parses it incrementally, so memory stays around
one day bucket plus one read chunk whatever the page size. Amounts are ``Decimal`` read from the
JSON text (numbers or numeric strings), never floats. Retries follow the official SDK (408, 409,
429, 5xx and transport errors, honouring ``retry-after-ms``, ``Retry-After`` and
``x-should-retry``); 400/401/403 are never retried. Error messages never contain the key.
"""

from __future__ import annotations

import codecs
import json
import math
import random
import re
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

GROUP_BY = ("line_item", "project_id", "api_key_id")
COSTS_PATH = "organization/costs"
MAX_PAGE_SIZE = 180
CHUNK_SIZE = 256 * 1024  # bytes per read; tests monkeypatch this down to a few bytes
MAX_VALUE_CHARS = 64 * 1024 * 1024  # one JSON value (a result, a scalar) larger than this is bad
MAX_ERROR_BODY = 64 * 1024
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 8.0
ADMIN_KEYS_URL = "https://platform.openai.com/settings/organization/admin-keys"
_DAY = 86_400
_RETRY_STATUSES = frozenset({408, 409, 429})
_NEVER_RETRY = frozenset({400, 401, 403})


@dataclass(frozen=True, slots=True)
class CostResult:
    line_item: str | None
    project_id: str | None
    api_key_id: str | None
    amount: Decimal
    currency: str | None
    quantity: Decimal | None
    quantity_unit: str | None
    raw_json: str  # the original JSON text of this result object, exactly as received


@dataclass(frozen=True, slots=True)
class CostBucket:
    start_time: int  # unix seconds, inclusive
    end_time: int  # unix seconds, exclusive
    results: list[CostResult]


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    organization_id: str | None
    message: str


class CostsApiError(Exception):
    """A Costs API call failed; ``str(error)`` is one sentence, safe to show (no key in it)."""

    def __init__(
        self, message: str, *, status: int | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id

    @property
    def message(self) -> str:
        return str(self)


class InvalidKeyError(CostsApiError):
    """401: the key is wrong, malformed or revoked."""


class PermissionDeniedError(CostsApiError):
    """403 (or 401 "Missing scopes", or a non-admin key): the key cannot read costs."""


class BadRequestError(CostsApiError):
    """400: OpenAI rejected a request parameter."""


class RateLimitedError(CostsApiError):
    """429 that did not clear within the retry budget."""


class UpstreamError(CostsApiError):
    """5xx, 408/409, timeouts or connection failures that did not clear within the retry budget."""


class MalformedResponseError(CostsApiError):
    """The response body is not valid JSON or does not have the Costs API shape."""


def mask_key(key: str) -> str:
    """``sk-admin-...abcd``: the kind of key and its last four characters, never more."""
    prefix = next((p for p in ("sk-admin-", "sk-proj-", "sk-svcacct-", "sk-") if key.startswith(p)), "")
    rest = key[len(prefix) :]
    return f"{prefix}...{rest[-4:]}" if len(rest) >= 12 else f"{prefix}..."


_SK_TOKEN = re.compile(r"sk-[A-Za-z0-9_*\-]+")
_PRINTABLE_KEY = re.compile(r"[\x21-\x7e]+")


def _key_problem(key: str) -> tuple[type[CostsApiError], str] | None:
    """Why a key cannot be an admin key, judged from its text alone (None: it may be fine)."""
    where = f"an Organization Owner creates one (Read only) at {ADMIN_KEYS_URL}"
    if not key.strip():
        return InvalidKeyError, f"No admin key was given: paste an OpenAI admin key (sk-admin-...); {where}."
    if not _PRINTABLE_KEY.fullmatch(key):
        return InvalidKeyError, "The admin key contains spaces or unusual characters: copy it again."
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


# --------------------------------------------------------------------------- streaming parser

_WS = re.compile(r"[ \t\n\r]*")
_SCAN = json.JSONDecoder(parse_float=Decimal).scan_once  # the C scanner: (value, end) at an index
_SCAN_ERRORS = (StopIteration, ValueError, RecursionError)
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")
_STR_OR_NONE = frozenset({str, type(None)})


class _BadBody(Exception):
    """Internal: what is wrong with a body; the client turns it into MalformedResponseError."""


def _result_builder() -> Callable[..., CostResult]:
    # The frozen-dataclass __init__ (object.__setattr__ per field) costs about as much as decoding
    # the JSON object. Setting the slots through their descriptors gives the same, equal, frozen
    # CostResult at half the cost; this is the hot path for millions of results.
    names = tuple(f.name for f in fields(CostResult))
    assert names == CostResult.__slots__
    s0, s1, s2, s3, s4, s5, s6, s7 = (getattr(CostResult, n).__set__ for n in names)
    new = object.__new__

    def build(a: Any, b: Any, c: Any, d: Any, e: Any, f: Any, g: Any, h: Any) -> CostResult:
        r = new(CostResult)
        s0(r, a), s1(r, b), s2(r, c), s3(r, d), s4(r, e), s5(r, f), s6(r, g), s7(r, h)
        return r

    return build


_build_result = _result_builder()


def _decimal(value: Any, what: str) -> Decimal:
    if type(value) is Decimal:
        return value
    if type(value) is int:
        return Decimal(value)
    if type(value) is str and _NUMBER_TEXT.fullmatch(value):
        return Decimal(value.strip())
    raise _BadBody(f"{what} is not a number")


def _result(obj: dict[str, Any], raw: str) -> CostResult:
    try:
        amount = obj["amount"]
        value = amount["value"]
        currency = amount.get("currency")
    except (KeyError, TypeError, AttributeError):
        raise _BadBody("a cost result has no amount.value") from None
    if type(value) is not Decimal:
        value = _decimal(value, "amount.value")
    quantity = obj.get("quantity")
    if quantity is not None and type(quantity) is not Decimal:
        quantity = _decimal(quantity, "quantity")
    line_item, project_id = obj.get("line_item"), obj.get("project_id")
    api_key_id, unit = obj.get("api_key_id"), obj.get("quantity_unit")
    ok = _STR_OR_NONE
    if not (
        type(line_item) in ok
        and type(project_id) in ok
        and type(api_key_id) in ok
        and type(currency) in ok
        and type(unit) in ok
    ):
        raise _BadBody("a cost result has a text field that is not a string")
    return _build_result(line_item, project_id, api_key_id, value, currency, quantity, unit, raw)


def _bucket(times: dict[str, Any], results: list[CostResult] | None) -> CostBucket:
    start, end = times.get("start_time"), times.get("end_time")
    if type(start) is not int or type(end) is not int:
        raise _BadBody("a bucket has no integer start_time/end_time")
    if results is None:
        raise _BadBody("a bucket has no results list")
    return CostBucket(start, end, results)


class _PageReader:
    """Walks one page body ({"data": [bucket, ...], "has_more": ..., ...}) from a byte stream.

    The text buffer holds at most the current, unfinished JSON value plus one read: whenever a
    value runs past the end of the buffer, the consumed part is dropped and at least as many
    characters as are pending are read (so re-scans stay amortized O(n)).
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._decode = codecs.getincrementaldecoder("utf-8")().decode
        self.buf = ""
        self.eof = False
        self.meta: dict[str, Any] = {}
        self.saw_data = False

    def _more(self, pos: int) -> bool:
        """Drop ``buf[:pos]`` and read more; False when the stream had nothing left."""
        pending = len(self.buf) - pos
        if pending > MAX_VALUE_CHARS:
            raise _BadBody("a single JSON value is too large")
        pieces, got, want = [self.buf[pos:]], 0, max(pending, CHUNK_SIZE)
        try:
            while got < want and not self.eof:
                chunk = next(self._chunks, None)
                if chunk is None:
                    self.eof = True
                text = self._decode(chunk or b"", chunk is None)
                pieces.append(text)
                got += len(text)
        except UnicodeDecodeError:
            raise _BadBody("the body is not valid UTF-8") from None
        self.buf = "".join(pieces)
        return got > 0

    def _ws(self, pos: int) -> int:
        while True:
            pos = _WS.match(self.buf, pos).end()  # type: ignore[union-attr]
            if pos < len(self.buf):
                return pos
            if not self._more(pos):
                raise _BadBody("the body ended early")
            pos = 0

    def _value(self, pos: int) -> tuple[Any, int, int]:
        """(value, start, end) of the JSON value at ``pos`` (positions in the current buffer)."""
        while True:
            buf = self.buf
            try:
                value, end = _SCAN(buf, pos)
            except _SCAN_ERRORS:
                if not self._more(pos):
                    raise _BadBody("the body is not valid JSON") from None
            else:
                if end < len(buf) or self.eof:  # a number at the very end may be cut short
                    return value, pos, end
                self._more(pos)
            pos = 0

    def _open(self, pos: int, opener: str, closer: str, what: str) -> tuple[bool, int]:
        if self.buf[pos] != opener:
            raise _BadBody(f"{what} is not a JSON {'object' if opener == '{' else 'array'}")
        pos = self._ws(pos + 1)
        return (False, pos + 1) if self.buf[pos] == closer else (True, pos)

    def _key(self, pos: int) -> tuple[str, int]:
        if self.buf[pos] != '"':
            raise _BadBody("an object key is not a string")
        key, _, end = self._value(pos)
        pos = self._ws(end)
        if self.buf[pos] != ":":
            raise _BadBody("an object key is not followed by ':'")
        return key, self._ws(pos + 1)

    def _next(self, pos: int, closer: str) -> tuple[bool, int]:
        pos = self._ws(pos)
        char = self.buf[pos]
        if char == ",":
            return True, self._ws(pos + 1)
        if char == closer:
            return False, pos + 1
        raise _BadBody(f"expected ',' or '{closer}'")

    def buckets(self) -> Iterator[CostBucket]:
        """Yield each bucket as soon as its object closes; then check nothing follows the page."""
        more, pos = self._open(self._ws(0), "{", "}", "the body")
        while more:
            key, pos = self._key(pos)
            if key == "data":
                pos = yield from self._data(pos)
            else:
                value, _, pos = self._value(pos)
                if key in ("has_more", "next_page"):
                    self.meta[key] = value
            more, pos = self._next(pos, "}")
        self._finish(pos)

    def _data(self, pos: int) -> Generator[CostBucket, None, int]:
        more, pos = self._open(pos, "[", "]", "data")
        self.saw_data = True
        while more:
            bucket, pos = self._bucket(pos)
            yield bucket
            more, pos = self._next(pos, "]")
        return pos

    def _bucket(self, pos: int) -> tuple[CostBucket, int]:
        more, pos = self._open(pos, "{", "}", "a bucket")
        times: dict[str, Any] = {}
        results: list[CostResult] | None = None
        while more:
            key, pos = self._key(pos)
            if key == "results":  # may come before start_time/end_time: kept until the bucket ends
                part, pos = self._results(pos)
                results = part if results is None else results + part
            else:
                value, _, pos = self._value(pos)
                times[key] = value
            more, pos = self._next(pos, "}")
        return _bucket(times, results), pos

    def _results(self, pos: int) -> tuple[list[CostResult], int]:
        more, pos = self._open(pos, "[", "]", "results")
        out: list[CostResult] = []
        append = out.append
        while more:
            buf = self.buf
            if buf[pos] != "{":
                raise _BadBody("a cost result is not an object")
            try:
                obj, end = _SCAN(buf, pos)
            except _SCAN_ERRORS:
                end = len(buf)  # cut short by the buffer end, or bad: the slow path decides
            if end >= len(buf):
                obj, pos, end = self._value(pos)
                buf = self.buf
            append(_result(obj, buf[pos:end]))
            if buf.startswith(",{", end):  # the compact common case
                pos = end + 1
            else:
                more, pos = self._next(end, "]")
        return out, pos

    def _finish(self, pos: int) -> None:
        while True:
            pos = _WS.match(self.buf, pos).end()  # type: ignore[union-attr]
            if pos < len(self.buf):
                raise _BadBody("there is data after the JSON body")
            if not self._more(pos):
                return
            pos = 0

    def page_info(self) -> tuple[bool, str | None]:
        if not self.saw_data:
            raise _BadBody("the body has no data list")
        has_more, next_page = self.meta.get("has_more"), self.meta.get("next_page")
        if has_more is not None and type(has_more) is not bool:
            raise _BadBody("has_more is not a boolean")
        if has_more and (type(next_page) is not str or not next_page):
            raise _BadBody("has_more is true but next_page is not a cursor")
        return bool(has_more), next_page if has_more else None
