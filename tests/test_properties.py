"""Property-based tests (hypothesis) that complement tests/test_client.py.

test_client.py already checks single pages (random valid bodies parse exactly, random invalid
bodies are MalformedResponseError). These add what a real sync meets on top of that:

* pages: a random split of the buckets over many pages (cursor pagination), with random
  transient faults in between (429, 5xx, a body cut mid-stream) -> every bucket exactly once,
  in order, totals exact;
* the whole write path: the same responses, with hostile text (quotes, SQL, newlines, NUL,
  unicode) and every amount spelling, through CostsClient -> staging CSV -> DuckDB slice
  replace -> rows read back identical and per-day sums exact;
* a corrupted page anywhere in a multi-page answer -> MalformedResponseError, never another
  exception.

Runs use a fixed, derandomized profile (no example database), bounded to stay fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.plans import DateRange
from grafient_pipeline.providers.openai.client import CostsClient, MalformedResponseError
from grafient_pipeline.sync import Slice, load_staged, stage_chunks
from grafient_pipeline.warehouse import transaction

settings.register_profile(
    "grafient-reliability",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile("grafient-reliability")

KEY = "sk-admin-PropertyTest-" + "Q9w8E7r6T5y4U3i2O1p0"
BASE = "https://costs.invalid/v1"
DAY0 = date(2025, 3, 1)
DAYS = 7
T0 = int(datetime(DAY0.year, DAY0.month, DAY0.day, tzinfo=UTC).timestamp())
HOSTILE = [
    "gpt-4o-2024-08-06, input",
    "priority | gpt-5.6-sol, output, long context",
    "Web search tool calls",
    "x'); DROP TABLE raw_openai_costs; --",
    "say \"hi\", then 'bye'",
    "new\nline",
    "cr\r\nlf\rcr",
    "tab\tand\\backslash",
    "nul\x00byte",
    "NULL",
    "\\N",
    "東京 Ελλάδα 🚀 👨‍👩‍👧",
    "\u202eright-to-left",
    " padded ",
    "",
]
TEXT = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
)
AMOUNTS = st.decimals(
    min_value=-(10**6), max_value=10**6, places=16, allow_nan=False, allow_infinity=False
)
# JSON whitespace between tokens (OpenAI pretty-prints), CRLF included.
SEPARATORS = ["", " ", "\n", "\n      ", "\t", " \n\t ", "\r\n", "\r\n  "]
SPELLINGS = ["fixed", "padded16", "exp", "EXP", "int"]
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-100, 100), st.text(max_size=5)),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=4,
)


def spell(value: Decimal, how: str) -> str:
    """A JSON number spelling of an exact decimal (the API uses all of these)."""
    if how == "int" and value == value.to_integral_value():
        return str(int(value))
    if how == "padded16":
        return format(value.quantize(Decimal("1e-16")), "f")
    if how in ("exp", "EXP"):
        text = format(value, "e")
        return text.upper() if how == "EXP" else text
    return format(value, "f")


@dataclass
class Expected:
    line_item: str | None
    project_id: str | None
    api_key_id: str | None
    amount: Decimal
    currency: str | None
    quantity: Decimal | None
    quantity_unit: str | None


@st.composite
def results(draw: st.DrawFn) -> tuple[dict[str, Any], Expected]:
    amount = draw(AMOUNTS)
    text = spell(amount, draw(st.sampled_from(SPELLINGS)))
    as_string = draw(st.booleans())
    value: Any = text if as_string else ("raw", text)
    obj: dict[str, Any] = {"object": "organization.costs.result"}
    fields: dict[str, Any] = {}
    for name in ("line_item", "project_id", "api_key_id", "quantity_unit"):
        choice = draw(st.one_of(st.just("<absent>"), st.none(), TEXT))
        if choice != "<absent>":
            obj[name] = choice
        fields[name] = None if choice == "<absent>" else choice
    currency = draw(st.sampled_from(["usd", None, "<absent>"]))
    obj["amount"] = {"value": value} | ({} if currency == "<absent>" else {"currency": currency})
    quantity = draw(st.one_of(st.none(), st.integers(0, 10**9).map(Decimal), AMOUNTS))
    if quantity is not None:
        quantity_text = spell(quantity, draw(st.sampled_from(SPELLINGS)))
        obj["quantity"] = quantity_text if draw(st.booleans()) else ("raw", quantity_text)
    elif draw(st.booleans()):
        obj["quantity"] = None
    for key, extra in draw(st.dictionaries(st.sampled_from(["organization_id", "zz", "nested"]),
                                           JSONISH, max_size=2)).items():  # fmt: skip
        obj[key] = extra
    expected = Expected(
        fields["line_item"], fields["project_id"], fields["api_key_id"], amount,
        None if currency == "<absent>" else currency, quantity, fields["quantity_unit"],
    )  # fmt: skip
    obj = dict(draw(st.permutations(list(obj.items()))))
    return obj, expected


def render(value: Any, ascii_only: bool, sep: str = "") -> str:
    """JSON text where number spellings are kept verbatim (floats would lose digits), with
    ``sep`` (any JSON whitespace, newlines included) between all tokens."""
    if isinstance(value, dict):
        inner = f"{sep},{sep}".join(
            f"{json.dumps(k, ensure_ascii=ascii_only)}{sep}:{sep}{render(v, ascii_only, sep)}"
            for k, v in value.items()
        )
        return "{" + sep + inner + sep + "}"
    if isinstance(value, list):
        return "[" + sep + f"{sep},{sep}".join(render(v, ascii_only, sep) for v in value) + "]"
    if isinstance(value, tuple) and value[0] == "raw":
        return value[1]
    return json.dumps(value, ensure_ascii=ascii_only)


@dataclass
class Api:
    """A Costs API double: pages of buckets behind cursors, faults scheduled per request."""

    pages: list[bytes]
    faults: list[list[str]]  # per page: transient failures before the good answer
    cut: float = 0.5
    requests: int = 0
    served: dict[int, int] = field(default_factory=dict)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        cursor = parse_qs(urlsplit(str(request.url)).query).get("page", ["page_0"])[0]
        index = int(cursor.removeprefix("page_"))
        attempt = self.served.get(index, 0)
        self.served[index] = attempt + 1
        fault = self.faults[index][attempt] if attempt < len(self.faults[index]) else None
        body = self.pages[index]
        if fault == "429":
            return httpx.Response(429, json={"error": {"message": "slow down"}},
                                  headers={"retry-after": "0"})  # fmt: skip
        if fault in ("500", "502", "503"):
            return httpx.Response(int(fault), text="<html>upstream</html>")
        if fault == "drop":
            return httpx.Response(200, stream=Dropped(body[: int(len(body) * self.cut)]))
        return httpx.Response(200, content=body, headers={"x-request-id": "req_prop"})


class Dropped(httpx.SyncByteStream):
    """A body that breaks off: some bytes, then the connection is gone."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


@st.composite
def answers(draw: st.DrawFn, faulty: bool = True) -> tuple[Api, list[tuple[int, list]]]:
    """Random buckets (some empty), split over random pages, with random transient faults."""
    count = draw(st.integers(0, DAYS))
    buckets, expected = [], []
    ascii_only = draw(st.booleans())
    sep = draw(st.sampled_from(SEPARATORS))
    for i in range(count):
        drawn = draw(st.lists(results(), max_size=4))
        start = T0 + i * 86_400
        items = [obj for obj, _ in drawn]
        rendered = f",{sep}".join(render(o, ascii_only, sep) for o in items)
        buckets.append(
            f'{{"object":"bucket","start_time":{start},"end_time":{start + 86_400},'
            f'"results":[{rendered}]}}'
        )
        expected.append((start, [e for _, e in drawn]))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, count - 1)), max_size=count))))
    edges = [0, *[c for c in cuts if 0 < c < count], count]
    pages = []
    for n, (a, b) in enumerate(zip(edges, edges[1:] or [count], strict=False)):
        last = b >= count
        next_page = "null" if last else f'"page_{n + 1}"'
        pages.append(
            f'{{"object":"page","data":[{",".join(buckets[a:b])}],'
            f'"has_more":{"false" if last else "true"},"next_page":{next_page}}}'.encode()
        )
    kinds = st.sampled_from(["429", "500", "502", "503", "drop"])
    faults = [draw(st.lists(kinds, max_size=3)) if faulty else [] for _ in pages]
    return Api(pages, faults, cut=draw(st.floats(0.05, 0.95))), expected


def fetch(api: Api) -> list:
    client = CostsClient(KEY, BASE, transport=httpx.MockTransport(api.handle),
                         sleep=lambda _s: None)  # fmt: skip
    with client:
        return list(client.iter_buckets(DAY0, DAY0 + timedelta(days=DAYS - 1)))


def as_tuples(items: list[Expected]) -> list[tuple]:
    return [(e.line_item, e.project_id, e.api_key_id, e.amount, e.currency, e.quantity,
             e.quantity_unit) for e in items]  # fmt: skip


# ----------------------------------------------------------------------------- properties


@settings(PROFILE, max_examples=150)
@given(answers())
def test_any_page_split_with_transient_faults_gives_each_bucket_once_exactly(case):
    api, expected = case
    buckets = fetch(api)
    assert [b.start_time for b in buckets] == [start for start, _ in expected]
    for bucket, (_, want) in zip(buckets, expected, strict=True):
        got = [(r.line_item, r.project_id, r.api_key_id, r.amount, r.currency, r.quantity,
                r.quantity_unit) for r in bucket.results]  # fmt: skip
        assert got == as_tuples(want)
        assert all(type(r.amount) is Decimal for r in bucket.results)
    with localcontext(prec=80):
        total = sum((r.amount for b in buckets for r in b.results), Decimal(0))
        want_total = sum((e.amount for _, es in expected for e in es), Decimal(0))
    assert total == want_total
    assert api.requests == len(api.pages) + sum(len(f) for f in api.faults)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    folder = tmp_path_factory.mktemp("properties")
    conn = duckdb.connect(str(folder / "warehouse.duckdb"))
    ensure_schema(conn)
    yield folder, conn
    conn.close()


def _load_slice(folder: Path, conn: Any, piece: Slice, buckets: list, run_id: str) -> None:
    """The sync's path without its loading thread: stage, then replace the slice at once."""
    (staged,) = stage_chunks(buckets, folder, run_id, rows_per_chunk=None)
    with transaction(conn):
        load_staged(conn, piece, staged, run_id, replace=True, raw_table="raw_openai_costs")


@settings(PROFILE, max_examples=60)
@given(case=answers(faulty=False))
def test_client_to_staging_csv_to_duckdb_round_trips_exactly(warehouse, case):
    folder, conn = warehouse
    api, expected = case
    buckets = fetch(api)
    piece = Slice("prop-test", DateRange(DAY0, DAY0 + timedelta(days=DAYS - 1)))
    for _ in range(2):  # a rerun replaces the slice: same rows, no duplicates
        _load_slice(folder, conn, piece, buckets, "run-prop")

    rows = conn.execute(
        "SELECT epoch(bucket_start)::BIGINT, line_item, project_id, api_key_id, amount_value, "
        "currency, quantity, quantity_unit, raw_json FROM raw_openai_costs "
        "WHERE integration_id = 'prop-test'"
    ).fetchall()
    want = [
        (start, e.line_item, e.project_id, e.api_key_id,
         e.amount, e.currency, e.quantity, e.quantity_unit)
        for start, es in expected for e in es
    ]  # fmt: skip
    got = [row[:8] for row in rows]
    assert sorted(got, key=repr) == sorted(want, key=repr)
    raw = sorted(row[8] for row in rows)
    assert raw == sorted(r.raw_json for b in buckets for r in b.results)
    per_day = conn.execute(
        "SELECT bucket_start::DATE, sum(amount_value) FROM raw_openai_costs "
        "WHERE integration_id = 'prop-test' GROUP BY 1"
    ).fetchall()
    with localcontext(prec=80):
        want_days: dict[date, Decimal] = {}
        for start, es in expected:
            if es:
                day = datetime.fromtimestamp(start, UTC).date()
                want_days[day] = sum((e.amount for e in es), Decimal(0))
    assert dict(per_day) == want_days


def corrupt(draw: st.DrawFn, body: bytes) -> bytes:
    page = json.loads(body, parse_float=Decimal)
    how = draw(st.integers(0, 11))
    data = page["data"]
    results = data[0]["results"] if data else []
    if (how in (2, 3) and not data) or (how in (4, 5) and not results):
        how = 0  # nothing to break there: break the page itself
    if how == 0:
        del page["data"]
    elif how == 1:
        page["data"] = draw(st.sampled_from([None, "x", 3, {"a": 1}]))
    elif how == 2:
        data[0]["start_time"] = draw(st.sampled_from(["1", None, 1.5, [], True]))
    elif how == 3:
        data[0]["results"] = draw(st.sampled_from([None, "x", {}]))
    elif how == 4:
        results[0]["amount"] = {"value": draw(st.sampled_from(
            ["abc", True, None, [], {}, "0x10", "NaN", "1.2.3", "", " "]))}  # fmt: skip
    elif how == 5:
        results[0]["line_item"] = draw(st.sampled_from([1, True, [], {}]))
    elif how == 6:
        page["has_more"] = draw(st.sampled_from(["yes", 1, [], "false"]))
    elif how == 7:
        page["has_more"], page["next_page"] = True, draw(st.sampled_from([None, 5, "", True]))
    elif how == 8:
        page["has_more"], page["next_page"] = True, "page_0"  # a cursor seen before
    text = json.dumps(page, default=str).encode()
    if how == 9:
        return text[: draw(st.integers(0, len(text) - 1))]
    if how == 10:
        return text + b'{"trailing": true}'
    if how == 11:
        at = draw(st.integers(0, len(text)))
        return text[:at] + b"\xff\xfe" + text[at:]
    return text


@settings(PROFILE, max_examples=120)
@given(answers(faulty=False), st.data())
def test_a_corrupted_page_anywhere_is_malformed_and_nothing_else(case, data):
    api, _ = case
    index = data.draw(st.integers(0, len(api.pages) - 1))
    api.pages[index] = corrupt(data.draw, api.pages[index])
    with pytest.raises(MalformedResponseError) as caught:
        fetch(api)
    assert KEY not in str(caught.value) and len(str(caught.value).splitlines()) == 1


# ----------------------------------------------------------------------------- found by hand


def one_page(*results_json: str, day: int = 0, has_more: str = "false",
             next_page: str = "null") -> bytes:  # fmt: skip
    start = T0 + day * 86_400
    return (
        f'{{"object":"page","data":[{{"object":"bucket","start_time":{start},'
        f'"end_time":{start + 86_400},"results":[{",".join(results_json)}]}}],'
        f'"has_more":{has_more},"next_page":{next_page}}}'
    ).encode()


def test_has_more_null_with_a_cursor_never_drops_later_pages():
    first = one_page('{"amount":{"value":1}}', has_more="null", next_page='"page_1"')
    second = one_page('{"amount":{"value":2}}', day=1)
    api = Api([first, second], [[], []])
    try:
        buckets = fetch(api)
    except MalformedResponseError:
        return  # refusing the page is a fine answer too
    assert len(buckets) == 2, "the second page was never requested"


def test_duplicate_keys_are_refused_or_stored_as_parsed(warehouse):
    folder, conn = warehouse
    result = '{"amount":{"value":1,"currency":"usd"},"line_item":"first","line_item":"last"}'
    api = Api([one_page(result)], [[]])
    try:
        buckets = fetch(api)
    except MalformedResponseError:
        return
    piece = Slice("dup-keys", DateRange(DAY0, DAY0))
    _load_slice(folder, conn, piece, buckets, "run-dup")
    (stored,) = conn.execute(
        "SELECT line_item FROM raw_openai_costs WHERE integration_id = 'dup-keys'"
    ).fetchone()
    assert stored == buckets[0].results[0].line_item
