"""Incremental parsing of one Costs API page body: buckets come out one at a time.

The body is read from a byte stream and walked with the C JSON scanner, so memory stays around one
day bucket plus one read whatever the page size. Amounts are kept as exact decimal text (from JSON
numbers or numeric strings, never through a float) and read as ``Decimal``; each result keeps its
exact original JSON text.

A bucket's results, the hot path, are decoded in bulk with msgspec: each run of complete results
the buffer holds is split into the results' exact bytes and decoded into typed fields at C speed
(a ResultBatch). Whatever msgspec refuses goes through the scanner one result at a time, which
keeps every error message (and every lenient reading) as it was.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Generator, Iterator
from decimal import Context, Decimal
from typing import Any

import msgspec

from grafient_pipeline.providers.base import CostBucket, CostResult, ResultBatch
from grafient_pipeline.providers.http import PageFormatError, page_cursor

__all__ = ["PageFormatError", "PageReader"]

MAX_VALUE_CHARS = 16 * 1024 * 1024  # a single JSON value (result, extra key) beyond: malformed


_WS = re.compile(r"[ \t\n\r]*")
# The C scanner: (value, end) at an index. Non-integer numbers stay text (their exact digits).
_SCAN = json.JSONDecoder(parse_float=str).scan_once
_SCAN_ERRORS = (StopIteration, ValueError, RecursionError)
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")
_STR_OR_NONE = frozenset({str, type(None)})
_INT_ONLY = {int}
_INT64_SAFE = 10**18
# The warehouse stores DECIMAL(38, 16): at most 22 integer digits and 16 decimals. A value that
# does not fit is refused, never rounded. Plain text within those digits fits as it is (the fast
# path); anything else (exponents, signs, spaces, trailing zeros) goes through Decimal.
_FITS_AS_IS = re.compile(r"-?[0-9]{1,22}(?:\.[0-9]{1,16})?").fullmatch
# Small amounts as a float's repr writes them ("9.375e-06": about one in six results), turned
# into plain text with string operations (no Decimal) when they have at most 16 decimals.
_SMALL_EXPONENT_FORM = re.compile(r"(-?)([0-9])(?:\.([0-9]{1,15}))?[eE]-0*([1-9][0-9]?)").fullmatch
_INT_LIMIT = 10**22
_QUANTUM = Decimal(1).scaleb(-16)
_WIDE = Context(prec=60)


_new_tuple = tuple.__new__


class _Amount(msgspec.Struct, gc=False):
    value: Any  # int, the exact text of a float (float_hook=str), or anything: checked after
    currency: str | None = None


class _Fields(msgspec.Struct, gc=False):  # gc=False: no cycles, cheaper to allocate
    amount: _Amount
    line_item: str | None = None
    project_id: str | None = None
    api_key_id: str | None = None
    quantity: Any = None
    quantity_unit: str | None = None


_SPLIT = msgspec.json.Decoder(list[msgspec.Raw]).decode
_TYPED = msgspec.json.Decoder(list[_Fields], float_hook=str).decode
# A separator between two results: compact first (rfind), then any whitespace (regex).
_RESULTS_SEPARATOR = re.compile(r"\}[ \t\n\r]*,[ \t\n\r]*\{")
_SEPARATOR_WINDOW = 64 * 1024
# Lines (one value's repr each) other than an int of at most 18 digits or a str of plain decimal
# text that fits DECIMAL(38, 16) as it is.
_NOT_AS_IS_LINES = re.compile(
    r"^(?!-?[0-9]{1,18}$|'-?[0-9]{1,22}(?:\.[0-9]{1,16})?'$)", re.MULTILINE
).finditer


def _decimal_text(value: Any, what: str) -> str:
    """The exact decimal text of a JSON number (int, or text from the scanner) or numeric string,
    checked to fit DECIMAL(38, 16)."""
    if type(value) is str:
        if _FITS_AS_IS(value):
            return value
        small = _SMALL_EXPONENT_FORM(value)
        if small:
            sign, lead, fraction, exponent = small.groups()
            zeros = int(exponent) - 1
            if zeros + 1 + len(fraction or "") <= 16:
                return f"{sign}0.{'0' * zeros}{lead}{fraction or ''}"
        if _NUMBER_TEXT.fullmatch(value):
            try:
                return _fitting(Decimal(value.strip()), what)
            except ArithmeticError:  # an exponent beyond what Decimal can hold
                pass
    elif type(value) is int:
        if -_INT_LIMIT < value < _INT_LIMIT:
            return str(value)
        return _fitting(Decimal(value), what)
    raise PageFormatError(f"{what} is not a number")


def _fitting(value: Decimal, what: str) -> str:
    if value.adjusted() >= 22 or _WIDE.quantize(value, _QUANTUM) != value:
        raise PageFormatError(
            f"{what} {value} does not fit 22 integer digits and 16 decimals exactly"
        )
    return format(value, "f")


def _result(obj: dict[str, Any], raw: str) -> CostResult:
    try:  # the full shape: plain indexing is the fast path (missing keys take the slow one)
        amount = obj["amount"]
        value, currency = amount["value"], amount["currency"]
        line_item, project_id, api_key_id = obj["line_item"], obj["project_id"], obj["api_key_id"]
        quantity, unit = obj["quantity"], obj["quantity_unit"]
    except (KeyError, TypeError):
        return _result_slow(obj, raw)
    if type(value) is not str or not _FITS_AS_IS(value):
        value = _decimal_text(value, "amount.value")
    if quantity is not None:
        kind = type(quantity)
        if kind is int and -_INT_LIMIT < quantity < _INT_LIMIT:
            quantity = str(quantity)
        elif kind is not str or not _FITS_AS_IS(quantity):
            quantity = _decimal_text(quantity, "quantity")
    ok = _STR_OR_NONE
    if not (
        type(line_item) in ok
        and type(project_id) in ok
        and type(api_key_id) in ok
        and type(currency) in ok
        and type(unit) in ok
    ):
        raise PageFormatError("a cost result has a text field that is not a string")
    return _new_tuple(
        CostResult, (line_item, project_id, api_key_id, value, currency, quantity, unit, raw)
    )


def _result_slow(obj: dict[str, Any], raw: str) -> CostResult:
    """Results with missing keys (legacy shape, no currency): defaults, then the same checks."""
    amount = obj.get("amount")
    if type(amount) is not dict or "value" not in amount:
        raise PageFormatError("a cost result has no amount.value")
    full = dict.fromkeys(("line_item", "project_id", "api_key_id", "quantity", "quantity_unit"))
    full.update(obj)
    full["amount"] = {"currency": None, **amount}
    return _result(full, raw)


def _not_as_is(values: list[Any]) -> list[int]:
    """Indexes of the values to normalize: all but ints of at most 18 digits (msgspec encodes
    any int64) and plain decimal text that fits as it is. One regex runs over all of them at once
    (most fit), on their reprs: a str's is quoted and has no line break, an int's is bare."""
    if (
        set(map(type, values)) == _INT_ONLY
        and min(values) > -_INT64_SAFE
        and max(values) < _INT64_SAFE
    ):
        return []
    joined = "\n".join(map(repr, values))
    indexes: list[int] = []
    index = seen = 0
    for match in _NOT_AS_IS_LINES(joined):
        start = match.start()
        index += joined.count("\n", seen, start)
        seen = start
        indexes.append(index)
    return indexes


def _normalize(fields: list[_Fields]) -> None:
    """Every amount and quantity as an int or exact plain decimal text, in place (the same checks,
    errors and text as ``_result``)."""
    amounts = [f.amount for f in fields]
    values = [a.value for a in amounts]
    for i in _not_as_is(values):
        amounts[i].value = _decimal_text(values[i], "amount.value")
    quantities = [f.quantity for f in fields]
    for i in _not_as_is(quantities):
        if quantities[i] is not None:
            fields[i].quantity = _decimal_text(quantities[i], "quantity")


def _decoded(text: str) -> tuple[list[_Fields], list[msgspec.Raw]] | None:
    """The results of a JSON array text, or None if msgspec refuses it or any of its results."""
    data = text.encode()
    try:
        raws = _SPLIT(data)
        fields = _TYPED(data)
        _normalize(fields)
    except (msgspec.DecodeError, PageFormatError):
        return None
    return fields, raws


def _as_fields(result: CostResult) -> _Fields:
    amount = _Amount(result.amount_text, result.currency)
    return _Fields(
        amount,
        result.line_item,
        result.project_id,
        result.api_key_id,
        result.quantity_text,
        result.quantity_unit,
    )


def _bucket(times: dict[str, Any], results: ResultBatch | None) -> CostBucket:
    start, end = times.get("start_time"), times.get("end_time")
    if type(start) is not int or type(end) is not int:
        raise PageFormatError("a bucket has no integer start_time/end_time")
    if results is None:
        raise PageFormatError("a bucket has no results list")
    return CostBucket(start, end, results)


class PageReader:
    """Walks one page body ({"data": [bucket, ...], "has_more": ..., ...}) from a byte stream.

    The text buffer holds at most the current, unfinished JSON value plus one read: whenever a
    value runs past the end of the buffer, the consumed part is dropped and at least as many
    characters as are pending are read (so re-scans stay amortized O(n)).
    """

    def __init__(self, chunks: Iterator[bytes], min_read: int = 256 * 1024) -> None:
        self._min_read = min_read  # characters to read ahead when a value runs past the buffer
        self._chunks = chunks
        self._decode = codecs.getincrementaldecoder("utf-8")().decode
        self.buf = ""
        self.eof = False
        self.meta: dict[str, Any] = {}
        self.saw_data = False
        # Characters of results to read one by one before the next bulk try: a failed try
        # (an odd or hostile page) is paid back in scanner work, so the total stays O(n).
        self._one_by_one = 0

    def _more(self, pos: int) -> bool:
        """Drop ``buf[:pos]`` and read more; False when the stream had nothing left."""
        pending = len(self.buf) - pos
        if pending > MAX_VALUE_CHARS:
            raise PageFormatError("a single JSON value is too large")
        pieces, got, want = [self.buf[pos:]], 0, max(pending, self._min_read)
        try:
            while got < want and not self.eof:
                chunk = next(self._chunks, None)
                if chunk is None:
                    self.eof = True
                text = self._decode(chunk or b"", chunk is None)
                pieces.append(text)
                got += len(text)
        except UnicodeDecodeError:
            raise PageFormatError("the body is not valid UTF-8") from None
        self.buf = "".join(pieces)
        return got > 0

    def _ws(self, pos: int) -> int:
        while True:
            pos = _WS.match(self.buf, pos).end()  # type: ignore[union-attr]
            if pos < len(self.buf):
                return pos
            if not self._more(pos):
                raise PageFormatError("the body ended early")
            pos = 0

    def _value(self, pos: int) -> tuple[Any, int, int]:
        """(value, start, end) of the JSON value at ``pos`` (positions in the current buffer)."""
        while True:
            buf = self.buf
            try:
                value, end = _SCAN(buf, pos)
            except _SCAN_ERRORS:
                if not self._more(pos):
                    raise PageFormatError("the body is not valid JSON") from None
            else:
                if end < len(buf) or self.eof:  # a number at the very end may be cut short
                    return value, pos, end
                self._more(pos)
            pos = 0

    def _open(self, pos: int, opener: str, closer: str, what: str) -> tuple[bool, int]:
        if self.buf[pos] != opener:
            raise PageFormatError(f"{what} is not a JSON {'object' if opener == '{' else 'array'}")
        pos = self._ws(pos + 1)
        return (False, pos + 1) if self.buf[pos] == closer else (True, pos)

    def _key(self, pos: int) -> tuple[str, int]:
        if self.buf[pos] != '"':
            raise PageFormatError("an object key is not a string")
        key, _, end = self._value(pos)
        pos = self._ws(end)
        if self.buf[pos] != ":":
            raise PageFormatError("an object key is not followed by ':'")
        return key, self._ws(pos + 1)

    def _next(self, pos: int, closer: str) -> tuple[bool, int]:
        pos = self._ws(pos)
        char = self.buf[pos]
        if char == ",":
            return True, self._ws(pos + 1)
        if char == closer:
            return False, pos + 1
        raise PageFormatError(f"expected ',' or '{closer}'")

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
        results: ResultBatch | None = None
        while more:
            key, pos = self._key(pos)
            if key == "results":  # may come before start_time/end_time: kept until the bucket ends
                part, pos = self._results(pos)
                if results is not None:  # a repeated key: its results follow the first ones
                    part = ResultBatch(results.fields + part.fields, results.raws + part.raws)
                results = part
            else:
                value, _, pos = self._value(pos)
                if key in ("start_time", "end_time"):
                    times[key] = value
            more, pos = self._next(pos, "}")
        return _bucket(times, results), pos

    def _results(self, pos: int) -> tuple[ResultBatch, int]:
        more, pos = self._open(pos, "[", "]", "results")
        fields: list[_Fields] = []
        raws: list[Any] = []
        while more:
            batch = self._batch(pos) if self._one_by_one <= 0 else None
            if batch is None:
                result, end = self._one_result(pos)
                fields.append(_as_fields(result))
                raws.append(result.raw_json.encode())
                self._one_by_one -= len(result.raw_json)
            else:
                fields += batch[0]
                raws += batch[1]
                end = batch[2]
            more, pos = self._next(end, "]")
        return ResultBatch(fields, raws), pos

    def _batch(self, pos: int) -> tuple[list[_Fields], list[Any], int] | None:
        """The complete results the buffer holds from ``pos`` on, decoded in bulk, and where the
        last one ends; None when the buffer ends inside the first one or msgspec refuses them.

        The run ends at the array's ``]`` or before a separator between results (the last one
        in the buffer). A ``]`` or separator inside a string or a nested value leaves the text
        an invalid array (JSON reads left to right: the text before it cannot close at depth
        0), so a valid decode proves the run is exactly complete results.
        """
        buf = self.buf
        if buf[pos] != "{":
            return None  # the scanner path says what is wrong
        close = buf.find("]", pos)
        if close != -1:
            decoded, end = _decoded("[" + buf[pos : close + 1]), close
        else:
            separator = self._last_separator(pos)
            if separator == -1:
                return None  # the buffer ends inside this result: the scanner reads on
            decoded, end = _decoded("[" + buf[pos : separator + 1] + "]"), separator + 1
        if decoded is None:
            self._one_by_one = end - pos
            return None
        return decoded[0], decoded[1], end

    def _last_separator(self, pos: int) -> int:
        """Where the last ``}`` that ends a result and is followed by another result is, or -1."""
        buf = self.buf
        found = buf.rfind("},{", pos)
        if found == -1:
            start = max(pos, len(buf) - _SEPARATOR_WINDOW)
            for match in _RESULTS_SEPARATOR.finditer(buf, start):
                found = match.start()
        return found

    def _one_result(self, pos: int) -> tuple[CostResult, int]:
        """One result through the C scanner (reading on as needed), and where it ends."""
        buf = self.buf
        if buf[pos] != "{":
            raise PageFormatError("a cost result is not an object")
        try:
            obj, end = _SCAN(buf, pos)
        except _SCAN_ERRORS:
            end = len(buf)  # cut short by the buffer end, or bad: the slow path decides
        if end >= len(buf):
            obj, pos, end = self._value(pos)
            buf = self.buf
        return _result(obj, buf[pos:end]), end

    def _finish(self, pos: int) -> None:
        while True:
            pos = _WS.match(self.buf, pos).end()  # type: ignore[union-attr]
            if pos < len(self.buf):
                raise PageFormatError("there is data after the JSON body")
            if not self._more(pos):
                return
            pos = 0

    def page_info(self) -> tuple[bool, str | None]:
        if not self.saw_data:
            raise PageFormatError("the body has no data list")
        return page_cursor(self.meta.get("has_more"), self.meta.get("next_page"))
