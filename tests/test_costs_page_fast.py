"""The bulk (msgspec) decoding of OpenAI cost results against the scanner, result by result.

The scanner path (``PageReader._batch`` turned off) is the pre-msgspec implementation kept as the
oracle: every body, cut anywhere, must give the same buckets, CostResults and error text both
ways; the bulk path's staging lines must load the same rows as the per-result lines.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.plans import DateRange
from grafient_pipeline.providers.base import CostBucket, CostResult, ResultBatch
from grafient_pipeline.providers.openai import costs_page
from grafient_pipeline.providers.openai.costs_page import PageFormatError, PageReader
from grafient_pipeline.sync import Slice, load_staged, stage_chunks
from grafient_pipeline.warehouse import transaction

T0 = 1_767_225_600  # 2026-01-01 00:00 UTC

PLAIN = (
    '{"object":"organization.costs.result","amount":{"value":0.00033375,"currency":"usd"},'
    '"line_item":"gpt-4o, input","project_id":"proj_a","api_key_id":"key_a",'
    '"quantity":267,"quantity_unit":"tokens"}'
)
# Results the bulk path must read exactly as the scanner does (or leave to it).
HOSTILE = [
    PLAIN,
    '{"amount":{"value":8.4e-05,"currency":"usd"},"line_item":"a]b","project_id":"]},{"}',
    '{"amount":{"value":"1.5"},"tags":[[1,2],[{"a":"]"}],{"b":[]}],"line_item":null}',
    '{"amount":{"value":1},"amount":{"value":"2.50"},"line_item":5,"line_item":"last wins"}',
    '{"amount":{"value":1,"value":2E-3},"quantity":1.0e1,"quantity":null}',
    '{"amount":{"value":" 1.5 "},"quantity":"7","quantity_unit":"\\u001f\\n\\u0003\\\\"}',
    '{"amount":{"value":-0.0},"quantity":1E+2,"note":"},{\\"amount\\":{\\"value\\":9}},{"}',
    '{"amount":{"value":1.50000000000000000000},"quantity":12345678901234567890}',
    '{"amount":{"value":1000000000000000000000},"quantity":-9223372036854775809}',
    '{"amount":{"value":0.1234567890123456},'
    '"line_item":"mod\\u00e8le \\ud83d\\ude80 \u6a21\u578b"}',
    '{"amount": {"value": 3, "currency": null}, "line_item": "ws"}',
    '{"amount":{"value":2.5e-15}, "quantity": 9.375e-06}',
    '{"amount":{"value":1},"x":{"y":[{"z":"]"}]},"line_item":"\\ud800 lone"}',
]
BAD = [
    '{"amount":{"value":true}}',
    '{"amount":{"value":"abc"}}',
    '{"amount":{"value":null}}',
    '{"amount":{"value":1e400}}',
    '{"amount":{"value":10000000000000000000000}}',
    '{"amount":{"value":1.00000000000000001}}',
    '{"amount":{"value":1},"quantity":"x"}',
    '{"amount":{"value":1},"project_id":7}',
    '{"amount":{"currency":"usd"}}',
    '{"amount":[1]}',
    '{"line_item":"no amount"}',
    "[1]",
    "7",
    '{"amount":{"value":1},}',
    '{"amount":{"value":NaN}}',
]


def body_of(results_per_bucket: list[list[str]], sep: str = "") -> bytes:
    buckets = [
        f'{{"object":"bucket","start_time":{T0 + i * 86400},"end_time":{T0 + (i + 1) * 86400},'
        f'"results":[{sep}{("," + sep).join(results)}{sep}]}}'
        for i, results in enumerate(results_per_bucket)
    ]
    return f'{{"object":"page","data":[{",".join(buckets)}],"has_more":false}}'.encode()


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def parse(chunks: list[bytes], min_read: int, *, bulk: bool) -> Any:
    """(buckets as plain tuples, page info), or the PageFormatError text."""
    reader = PageReader(iter(chunks), min_read)
    if not bulk:
        reader._batch = lambda pos: None  # type: ignore[method-assign]
    try:
        buckets = [(b.start_time, b.end_time, list(b.results)) for b in reader.buckets()]
        return buckets, reader.page_info()
    except PageFormatError as error:
        return str(error)


def same_both_ways(chunks: list[bytes], min_read: int) -> Any:
    bulk = parse(chunks, min_read, bulk=True)
    assert bulk == parse(chunks, min_read, bulk=False)
    return bulk


@pytest.mark.parametrize("text", HOSTILE)
def test_each_hostile_result_reads_as_the_scanner_reads_it(text: str) -> None:
    body = body_of([[PLAIN, text, PLAIN, text]])
    parsed = same_both_ways([body], 1 << 18)
    assert not isinstance(parsed, str), parsed
    [(_, _, results)] = parsed[0]
    assert [r.raw_json for r in results] == [PLAIN, text, PLAIN, text]


def test_the_expected_normalized_values() -> None:
    body = body_of([HOSTILE])
    [(_, _, results)] = parse([body], 1 << 18, bulk=True)[0]
    by_text = {r.raw_json: r for r in results}
    assert by_text[HOSTILE[1]].amount_text == "0.000084"
    assert by_text[HOSTILE[3]][:4] == ("last wins", None, None, "2.50")
    assert by_text[HOSTILE[4]].amount_text == "0.002" and by_text[HOSTILE[4]].quantity is None
    assert by_text[HOSTILE[5]].quantity_unit == "\x1f\n\x03\\"
    assert by_text[HOSTILE[7]].quantity_text == "12345678901234567890"
    assert by_text[HOSTILE[8]].amount_text == "1000000000000000000000"
    assert by_text[HOSTILE[11]][3:6] == ("0.0000000000000025", None, "0.000009375")


@pytest.mark.parametrize("text", BAD)
def test_each_bad_result_fails_with_the_scanners_message(text: str) -> None:
    body = body_of([[PLAIN] * 3, [PLAIN, text, PLAIN]])
    message = same_both_ways([body], 1 << 18)
    assert isinstance(message, str), message


def test_the_first_bad_result_is_the_one_reported() -> None:
    body = body_of([[PLAIN, '{"amount":{"value":1},"quantity":"x"}', BAD[0]]])
    assert same_both_ways([body], 1 << 18) == "quantity is not a number"


def test_a_bucket_cut_at_every_position_reads_the_same() -> None:
    body = body_of([HOSTILE[:6], [PLAIN, HOSTILE[9]]], sep="\n  ")
    want = parse([body], 1 << 18, bulk=False)
    for cut in range(1, len(body)):
        for min_read in (7, 1 << 18):
            assert parse([body[:cut], body[cut:]], min_read, bulk=True) == want, cut


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_tiny_reads_read_the_same(size: int) -> None:
    body = body_of([HOSTILE, [PLAIN] * 20, []], sep=" ")
    assert not isinstance(same_both_ways(split(body, size), size), str)


def test_invalid_utf8_in_an_unknown_field_is_refused() -> None:
    body = body_of([[PLAIN] * 50 + ['{"amount":{"value":1},"x":"XX"}']])
    body = body.replace(b"XX", b"\xff\xfe")
    for size in (5, 1 << 18):
        assert same_both_ways(split(body, size), size) == "the body is not valid UTF-8"


RESULT_TEXTS = st.lists(st.sampled_from(HOSTILE + BAD[:3]), max_size=12)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.lists(RESULT_TEXTS, max_size=3),
    st.sampled_from(["", " ", "\n    "]),
    st.lists(st.integers(1, 4000), max_size=6),
    st.sampled_from([1, 16, 300, 1 << 18]),
)
def test_random_pages_cut_anywhere_read_the_same(
    buckets: list[list[str]], sep: str, cuts: list[int], min_read: int
) -> None:
    body = body_of(buckets, sep)
    edges = [0, *sorted({c for c in cuts if c < len(body)}), len(body)]
    chunks = [body[a:b] for a, b in itertools.pairwise(edges)]
    same_both_ways(chunks, min_read)


def test_plain_pages_take_the_bulk_path(monkeypatch: pytest.MonkeyPatch) -> None:
    one_by_one = 0
    original = PageReader._one_result

    def count(self: PageReader, pos: int) -> Any:
        nonlocal one_by_one
        one_by_one += 1
        return original(self, pos)

    monkeypatch.setattr(PageReader, "_one_result", count)
    for sep in ("", "\n    "):
        one_by_one = 0
        body = body_of([[PLAIN] * 5000] * 3, sep)
        parsed = parse(split(body, 64 * 1024), 64 * 1024, bulk=True)
        assert sum(len(results) for _, _, results in parsed[0]) == 15000
        assert one_by_one <= len(body) // (64 * 1024) + 3  # at most one per read


def test_failed_bulk_tries_cost_no_more_than_the_scanner_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every result holds a ']' in a string: bulk tries keep failing, and are paid back."""
    tried = 0
    original = costs_page._decoded

    def spy(text: str) -> Any:
        nonlocal tried
        tried += len(text)
        return original(text)

    monkeypatch.setattr(costs_page, "_decoded", spy)
    text = '{"amount":{"value":1},"line_item":"[x]","n":"' + "y" * 100 + '"}'
    body = body_of([[text] * 3000])
    parsed = parse(split(body, 64 * 1024), 64 * 1024, bulk=True)
    assert len(parsed[0][0][2]) == 3000
    assert tried <= 2 * len(body)


# ----------------------------------------------------------------------------- the sequence


def test_a_result_batch_reads_as_the_list_of_its_cost_results() -> None:
    body = body_of([HOSTILE])
    reader = PageReader(iter([body]))
    [bucket] = list(reader.buckets())
    batch = bucket.results
    assert isinstance(batch, ResultBatch)
    listed = list(batch)
    assert all(type(r) is CostResult for r in listed)
    assert len(batch) == len(HOSTILE) and [batch[i] for i in range(len(batch))] == listed
    assert batch[-1] == listed[-1] and batch[2:5] == listed[2:5] and batch[::-1] == listed[::-1]
    assert batch.index(listed[3]) == 3 and listed[4] in batch


def test_repeated_results_keys_in_a_bucket_are_joined() -> None:
    text = (
        f'{{"data":[{{"results":[{PLAIN}],"start_time":{T0},"end_time":{T0 + 86400},'
        f'"results":[{HOSTILE[1]},{PLAIN}]}}]}}'
    )
    [(_, _, results)] = same_both_ways([text.encode()], 1 << 18)[0]
    assert [r.raw_json for r in results] == [PLAIN, HOSTILE[1], PLAIN]


# ----------------------------------------------------------------------------- staging


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    ensure_schema(connection)
    yield connection
    connection.close()


def _loaded(conn: duckdb.DuckDBPyConnection, folder: Path, buckets: list[CostBucket]) -> list:
    piece = Slice("fast", DateRange(date(2026, 1, 1), date(2026, 1, 3)))
    (staged,) = stage_chunks(buckets, folder, "fast", rows_per_chunk=None)
    with transaction(conn):
        load_staged(conn, piece, staged, "run", replace=True, raw_table="raw_openai_costs")
    return conn.execute(
        "SELECT bucket_start, bucket_end, line_item, project_id, api_key_id, amount_value, "
        "currency, quantity, quantity_unit, raw_json FROM raw_openai_costs "
        "ORDER BY bucket_start, raw_json, amount_value"
    ).fetchall()


def test_a_lone_surrogate_is_staged_one_by_one(tmp_path: Path) -> None:
    buckets = list(PageReader(iter([body_of([[PLAIN, HOSTILE[-1]]])])).buckets())
    (staged,) = stage_chunks(buckets, tmp_path, "s", rows_per_chunk=None)
    lines = staged.path.read_bytes().split(b"\n")
    assert lines[1].split(b"\x1f")[4] == b"1"  # the escaped form, as before ResultBatch


def test_batch_lines_load_the_rows_the_per_result_lines_load(
    conn: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    loadable = HOSTILE[:-1]  # a lone surrogate fails DuckDB's load either way (as it did)
    body = body_of([loadable, [], [PLAIN] * 3], sep="\r\n ")
    buckets = list(PageReader(iter([body])).buckets())
    assert all(isinstance(b.results, ResultBatch) for b in buckets)
    as_lists = [CostBucket(b.start_time, b.end_time, list(b.results)) for b in buckets]
    bulk = _loaded(conn, tmp_path / "bulk", buckets)
    one_by_one = _loaded(conn, tmp_path / "list", as_lists)
    assert bulk == one_by_one
    assert len(bulk) == len(loadable) + 3


def test_the_staged_amounts_are_exact(conn: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    amounts = ["0.0000000000000001", "9999999999999999999999.9999999999999999", "-0.5", "7"]
    results = [f'{{"amount":{{"value":{a}}}}}' for a in amounts]
    buckets = list(PageReader(iter([body_of([results])])).buckets())
    rows = _loaded(conn, tmp_path, buckets)
    assert sorted(row[5] for row in rows) == sorted(Decimal(a) for a in amounts)
