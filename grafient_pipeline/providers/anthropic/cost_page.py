"""One page of Anthropic's cost report, parsed into CostBuckets with each result's exact JSON.

A page holds at most 31 daily buckets, so it is read whole (the client caps its size) and walked
with the C JSON scanner: each result object's original text is kept as it came, and numbers stay
text (never a float). ``amount`` is a decimal string in CENTS ("123.45" is 1.2345 USD): it
becomes exact USD text by moving the decimal point two places (``Decimal.scaleb(-2)``), refused
when it does not fit DECIMAL(38, 16), never rounded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any, TypeVar

from grafient_pipeline.providers.base import CostBucket, CostResult
from grafient_pipeline.providers.http import PageFormatError, page_cursor

__all__ = ["PageFormatError", "cents_to_usd", "line_item", "parse_page"]

T = TypeVar("T")
_WS = re.compile(r"[ \t\n\r]*")
_SCAN = json.JSONDecoder(parse_float=str).scan_once  # non-integer numbers as their exact text
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_QUANTUM = Decimal(1).scaleb(-16)
_WIDE = Context(prec=80)
# The dimensions a result may carry (text or null); what a null description is composed from.
TEXT_FIELDS = (
    "currency",
    "workspace_id",
    "description",
    "cost_type",
    "model",
    "token_type",
    "service_tier",
    "context_window",
)
COMPOSED_FROM = ("model", "cost_type", "token_type", "service_tier", "context_window")


def _fits(value: Decimal) -> bool:
    """Whether DECIMAL(38, 16) holds ``value`` exactly (22 integer digits, 16 decimals)."""
    if not value.is_finite():
        return False
    return value.is_zero() or (value.adjusted() < 22 and _WIDE.quantize(value, _QUANTUM) == value)


def cents_to_usd(amount: Any) -> str:
    """Exact USD text of a cost report ``amount`` (cents, a decimal string or a JSON number);
    both the cents and the dollars must fit DECIMAL(38, 16)."""
    text = str(amount) if type(amount) is int else amount
    if type(text) is not str or not _NUMBER.fullmatch(text):
        raise PageFormatError("a cost result's amount is not a decimal number")
    try:
        cents = Decimal(text)
        usd = cents.scaleb(-2, _WIDE)
    except (InvalidOperation, ArithmeticError):
        raise PageFormatError(f"the amount {text} is out of range") from None
    if not (_fits(cents) and _fits(usd)):
        raise PageFormatError(
            f"the amount {text} (cents) does not fit 22 integer digits and 16 decimals exactly"
        )
    text = format(usd, "f")  # within 16 decimals once trailing zeros go (it fits)
    return text.rstrip("0").rstrip(".") if "." in text else text


def line_item(fields: dict[str, str | None]) -> str | None:
    """The result's description, or (ungrouped by description) the dimensions it has, in the
    order fct_costs_anthropic.sql composes them."""
    if fields["description"] is not None:
        return fields["description"]
    parts = [fields[name] for name in COMPOSED_FROM if fields[name]]
    return ", ".join(parts) if parts else None  # type: ignore[arg-type]


def _result(obj: Any, raw: str) -> CostResult:
    if type(obj) is not dict or "amount" not in obj:
        raise PageFormatError("a cost result has no amount")
    fields = {name: obj.get(name) for name in TEXT_FIELDS}
    if any(value is not None and type(value) is not str for value in fields.values()):
        raise PageFormatError("a cost result has a text field that is not a string")
    usd = cents_to_usd(obj["amount"])
    return CostResult(
        line_item(fields), fields["workspace_id"], None, usd, fields["currency"], None, None, raw
    )


def _unix(value: Any, what: str) -> int:
    """Seconds since the epoch of an RFC 3339 timestamp with a zone."""
    if type(value) is not str:
        raise PageFormatError(f"a bucket has no {what} timestamp")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise PageFormatError(f"a bucket's {what} {value!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise PageFormatError(f"a bucket's {what} {value!r} has no time zone")
    return int(when.timestamp())


class _Walk:
    """A JSON text walked value by value, so chosen values keep their original text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def ws(self, pos: int) -> int:
        return _WS.match(self.text, pos).end()  # type: ignore[union-attr]

    def char(self, pos: int) -> str:
        return self.text[pos] if pos < len(self.text) else ""

    def value(self, pos: int) -> tuple[Any, int]:
        try:
            return _SCAN(self.text, pos)  # type: ignore[no-any-return]
        except (StopIteration, ValueError, RecursionError):
            raise PageFormatError("the body is not valid JSON") from None

    def members(
        self, pos: int, parsers: dict[str, Callable[[int], tuple[Any, int]]]
    ) -> tuple[dict[str, Any], int]:
        """An object's members; ``parsers`` read the values of some keys."""
        if self.char(pos) != "{":
            raise PageFormatError("expected a JSON object")
        out: dict[str, Any] = {}
        pos = self.ws(pos + 1)
        if self.char(pos) == "}":
            return out, pos + 1
        while True:
            key, pos = self.value(pos)
            if type(key) is not str:
                raise PageFormatError("an object key is not a string")
            pos = self.ws(pos)
            if self.char(pos) != ":":
                raise PageFormatError("an object key is not followed by ':'")
            out[key], pos = parsers.get(key, self.value)(self.ws(pos + 1))
            pos, more = self._after(pos, "}")
            if not more:
                return out, pos

    def elements(self, pos: int, parse: Callable[[int], tuple[T, int]]) -> tuple[list[T], int]:
        if self.char(pos) != "[":
            raise PageFormatError("expected a JSON array")
        out: list[T] = []
        pos = self.ws(pos + 1)
        if self.char(pos) == "]":
            return out, pos + 1
        while True:
            item, pos = parse(pos)
            out.append(item)
            pos, more = self._after(pos, "]")
            if not more:
                return out, pos

    def _after(self, pos: int, closer: str) -> tuple[int, bool]:
        pos = self.ws(pos)
        char = self.char(pos)
        if char == ",":
            return self.ws(pos + 1), True
        if char == closer:
            return pos + 1, False
        raise PageFormatError(f"expected ',' or '{closer}'")


def parse_page(text: str) -> tuple[list[CostBucket], bool, str | None]:
    """(buckets, has_more, next_page) of one cost report page."""
    walk = _Walk(text)

    def result(pos: int) -> tuple[CostResult, int]:
        obj, end = walk.value(pos)
        return _result(obj, text[pos:end]), end

    def bucket(pos: int) -> tuple[CostBucket, int]:
        obj, end = walk.members(pos, {"results": lambda p: walk.elements(p, result)})
        results = obj.get("results")
        if type(results) is not list:
            raise PageFormatError("a bucket has no results list")
        start, stop = (
            _unix(obj.get("starting_at"), "starting_at"),
            _unix(obj.get("ending_at"), "ending_at"),
        )
        return CostBucket(start, stop, results), end

    page, end = walk.members(walk.ws(0), {"data": lambda p: walk.elements(p, bucket)})
    if walk.ws(end) != len(text):
        raise PageFormatError("there is data after the JSON body")
    return _page_info(page)


def _page_info(page: dict[str, Any]) -> tuple[list[CostBucket], bool, str | None]:
    buckets = page.get("data")
    if type(buckets) is not list:
        raise PageFormatError("the body has no data list")
    return (buckets, *page_cursor(page.get("has_more"), page.get("next_page")))
