"""CostsClient unit tests (respx / httpx.MockTransport; no network, no real sleeping)."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any
from unittest.mock import patch

import httpx
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st

from grafient_pipeline.providers.base import CostBucket, CostResult
from grafient_pipeline.providers.openai import client as client_module
from grafient_pipeline.providers.openai import costs_page
from grafient_pipeline.providers.openai.client import (
    GROUP_BY,
    BadRequestError,
    ConnectionCheck,
    CostsApiError,
    CostsClient,
    InvalidKeyError,
    MalformedResponseError,
    PermissionDeniedError,
    RateLimitedError,
    UpstreamError,
    mask_key,
)

BASE = "https://api.openai.com/v1"
URL = f"{BASE}/organization/costs"
KEY = "sk-admin-Zq7vX2mN9pL4kR8tY1wE5uI3oA6sD0fG2hJ4kL6zXwyz"
DAY0 = date(2025, 9, 1)
T0 = 1756684800  # 2025-09-01T00:00:00Z


def ts(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def result(value: Any = "1.5", line_item: str | None = "gpt-4o, input", **extra: Any) -> dict:
    item = {
        "object": "organization.costs.result",
        "amount": {"value": value, "currency": "usd"},
        "line_item": line_item,
        "project_id": "proj_1",
        "api_key_id": None,
        "quantity": 10,
        "quantity_unit": "tokens",
    }
    item.update(extra)
    return item


def bucket(day: date, results: list[dict] | None = None) -> dict:
    start = ts(day)
    return {"object": "bucket", "start_time": start, "end_time": start + 86400, "results": results}


def page(buckets: list[dict], next_page: str | None = None) -> dict:
    return {"object": "page", "data": buckets, "has_more": next_page is not None,
            "next_page": next_page}  # fmt: skip


def days(n: int, start: date = DAY0) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]


def ok(body: Any, **headers: str) -> httpx.Response:
    text = body if isinstance(body, str | bytes) else json.dumps(body)
    return httpx.Response(200, content=text, headers={"x-request-id": "req_ok", **headers})


def error(
    status: int, message: str = "", code: str | None = None, **headers: str
) -> httpx.Response:
    body = {"error": {"message": message, "type": "x", "param": None, "code": code}}
    hdrs = {"x-request-id": f"req_{status}", **{k.replace("_", "-"): v for k, v in headers.items()}}
    return httpx.Response(status, json=body, headers=hdrs)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(key: str = KEY, **kwargs: Any) -> tuple[CostsClient, Sleeps]:
    sleeps = Sleeps()
    kwargs.setdefault("rng", random.Random(0))
    return CostsClient(key, BASE, sleep=sleeps, **kwargs), sleeps


def fetch(client: CostsClient, start: date = DAY0, end: date = DAY0) -> list[CostBucket]:
    return list(client.iter_buckets(start, end))


@pytest.fixture
def api() -> Iterator[respx.Route]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock.get(URL)


# ------------------------------------------------------------------ request shape and pagination


def test_query_is_aligned_and_grouped(api: respx.Route) -> None:
    api.mock(return_value=ok(page([bucket(d, []) for d in days(3)])))
    client, _ = make()
    fetch(client, DAY0, DAY0 + timedelta(days=2))
    request = api.calls.last.request
    params = request.url.params
    assert params["start_time"] == str(T0)
    assert params["end_time"] == str(T0 + 3 * 86400)
    assert params["bucket_width"] == "1d"
    assert params["limit"] == "3"
    assert params.get_list("group_by[]") == list(GROUP_BY)
    assert "page" not in params
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_limit_is_capped_by_page_size(api: respx.Route) -> None:
    api.mock(return_value=ok(page([])))
    client, _ = make(page_size=7)
    fetch(client, DAY0, DAY0 + timedelta(days=29))
    assert api.calls.last.request.url.params["limit"] == "7"
    client, _ = make()
    fetch(client, DAY0, DAY0 + timedelta(days=199))
    assert api.calls.last.request.url.params["limit"] == "180"


def test_pages_with_fewer_buckets_than_limit(api: respx.Route) -> None:
    all_days = days(10)
    api.side_effect = [
        ok(page([bucket(d, [result()]) for d in all_days[:3]], "page_A")),
        ok(page([bucket(d, [result()]) for d in all_days[3:4]], "page_B==")),
        ok(page([], "page_C")),  # an empty page that still has more: keep going
        ok(page([bucket(d, [result()]) for d in all_days[4:]])),
    ]
    client, _ = make(page_size=7)
    buckets = fetch(client, all_days[0], all_days[-1])
    assert [b.start_time for b in buckets] == [ts(d) for d in all_days]
    assert client.request_count == 4
    cursors = [call.request.url.params.get("page") for call in api.calls]
    assert cursors == [None, "page_A", "page_B==", "page_C"]
    first, later = api.calls[0].request.url.params, api.calls[3].request.url.params
    assert [item for item in later.multi_items() if item[0] != "page"] == first.multi_items()
    assert later.get_list("group_by[]") == list(GROUP_BY)


def test_repeated_cursor_is_malformed(api: respx.Route) -> None:
    api.side_effect = [ok(page([], "page_A")), ok(page([], "page_A"))]
    client, _ = make()
    with pytest.raises(MalformedResponseError, match="cursor"):
        fetch(client, DAY0, DAY0 + timedelta(days=5))


def test_end_before_start_is_a_programming_error() -> None:
    client, _ = make()
    with pytest.raises(ValueError):
        client.iter_buckets(DAY0, DAY0 - timedelta(days=1))


# ------------------------------------------------------------------ amounts and shapes


@pytest.mark.parametrize(
    ("raw_value", "expected"),
    [
        ("12.50", Decimal("12.50")),
        ("1.29e-05", Decimal("0.0000129")),
        ("1.29E-5", Decimal("0.0000129")),
        ("0", Decimal(0)),
        ("-3", Decimal(-3)),
        (" 7.25 ", Decimal("7.25")),
    ],
)
def test_string_amounts(api: respx.Route, raw_value: str, expected: Decimal) -> None:
    api.mock(return_value=ok(page([bucket(DAY0, [result(raw_value)])])))
    client, _ = make()
    amount = fetch(client)[0].results[0].amount
    assert amount == expected
    assert isinstance(amount, Decimal)


@pytest.mark.parametrize(
    ("number_text", "expected"),
    [
        ("0.8958740000000000", "0.8958740000000000"),
        ("1.29e-05", "0.0000129"),
        ("9.375e-06", "0.000009375"),
        ("-1.5E-3", "-0.0015"),
        ("1.234567890123456e-01", "0.1234567890123456"),
        ("1e-16", "0.0000000000000001"),
        ("1E+2", "100"),
        ("164200", "164200"),
        ("0.1234567890123456", "0.1234567890123456"),
        ("123456789.1234567890123456", "123456789.1234567890123456"),
        ("-0.0000000000000001", "-0.0000000000000001"),
    ],
)
def test_number_amounts_are_exact(api: respx.Route, number_text: str, expected: str) -> None:
    text = json.dumps(page([bucket(DAY0, [result("PLACEHOLDER")])]))
    api.mock(return_value=ok(text.replace('"PLACEHOLDER"', number_text)))
    client, _ = make()
    got = fetch(client)[0].results[0]
    assert got.amount == Decimal(expected)
    assert got.amount_text == expected  # the digits as sent (plain notation), never a float's
    assert number_text in got.raw_json


def test_sixteen_decimals_sum_exactly(api: respx.Route) -> None:
    values = ["0.1000000000000001", "0.2000000000000002", "0.3000000000000003"]
    text = json.dumps(page([bucket(DAY0, [result(f"V{i}") for i in range(3)])]))
    for i, value in enumerate(values):
        text = text.replace(f'"V{i}"', value)
    api.mock(return_value=ok(text))
    client, _ = make()
    total = sum((r.amount for r in fetch(client)[0].results), Decimal(0))
    assert total == Decimal("0.6000000000000006")


def test_legacy_shape_and_extra_keys(api: respx.Route) -> None:
    legacy = {"object": "organization.costs.result", "amount": {"value": 2, "currency": "usd"},
              "line_item": None, "project_id": None, "organization_id": "org_x",
              "new_field": {"nested": [1, 2.5, None]}}  # fmt: skip
    body = page([dict(bucket(DAY0, [legacy]), extra_bucket_key=[1, {"a": "b"}])])
    body["organization_id"] = "org_x"
    api.mock(return_value=ok(body))
    client, _ = make()
    [got] = fetch(client)[0].results
    assert got == CostResult(
        line_item=None,
        project_id=None,
        api_key_id=None,
        amount_text="2",
        currency="usd",
        quantity_text=None,
        quantity_unit=None,
        raw_json=json.dumps(legacy),
    )


def test_missing_currency_and_string_quantity(api: respx.Route) -> None:
    item = {"amount": {"value": "1"}, "quantity": "1.5e3", "quantity_unit": "1000_tokens"}
    api.mock(return_value=ok(page([bucket(DAY0, [item])])))
    client, _ = make()
    [got] = fetch(client)[0].results
    assert (got.currency, got.quantity, got.quantity_unit) == (None, Decimal("1500"), "1000_tokens")


def test_raw_json_is_the_exact_text_slice(api: respx.Route) -> None:
    r1 = '{ "amount" : {"value":"1.10","currency":"usd"} ,\n  "line_item": "o1-pro, output" }'
    r2 = '{"line_item":"gpt-4o \\u00e9 \u00e9, input","amount":{"value":2.0E-3,"currency":"usd"}}'
    body = (
        '{"has_more": false, "data": [\n {"results": [ ' + r1 + " ,\n\t" + r2 + " ],"
        f' "end_time": {T0 + 86400}, "start_time": {T0}}}\n], "object": "page"}}\n'
    )
    api.mock(return_value=ok(body))
    client, _ = make()
    [b] = fetch(client)
    assert (b.start_time, b.end_time) == (T0, T0 + 86400)
    assert [r.raw_json for r in b.results] == [r1, r2]
    assert b.results[1].line_item == "gpt-4o é é, input"
    assert b.results[1].amount == Decimal("0.002")


def test_results_before_times_and_data_before_page_keys(api: respx.Route) -> None:
    body = {
        "data": [{"results": [result("1")], "end_time": T0 + 86400, "start_time": T0}],
        "next_page": None,
        "has_more": False,
        "object": "page",
    }
    api.mock(return_value=ok(body))
    client, _ = make()
    [b] = fetch(client)
    assert b.start_time == T0
    assert b.results[0].amount == Decimal(1)


def test_empty_days_come_back(api: respx.Route) -> None:
    api.mock(return_value=ok(page([bucket(d, []) for d in days(3)])))
    client, _ = make()
    assert [len(b.results) for b in fetch(client, DAY0, DAY0 + timedelta(days=2))] == [0, 0, 0]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64])
def test_tiny_chunks_and_multibyte_utf8(
    api: respx.Route, monkeypatch: pytest.MonkeyPatch, chunk_size: int
) -> None:
    monkeypatch.setattr(client_module, "CHUNK_SIZE", chunk_size)
    names = ["modèle-ß, input", "模型-✓, output", "emoji 🚀🧪, cached input", "plain, input"]
    items = [result(f"{i}.0625", name) for i, name in enumerate(names)]
    texts = [json.dumps(item, ensure_ascii=False) for item in items]
    results = ",".join(texts)
    body = (
        f'{{"data": [{{"start_time": {T0}, "end_time": {T0 + 86400}, "results": [{results}]}}], '
        '"has_more": false}'
    )
    api.mock(return_value=ok(body.encode("utf-8")))
    client, _ = make()
    [b] = fetch(client)
    assert [r.line_item for r in b.results] == names
    assert [r.raw_json for r in b.results] == texts
    assert sum(r.amount for r in b.results) == Decimal("6.25")


def test_invalid_utf8_is_malformed(api: respx.Route) -> None:
    body = json.dumps(page([bucket(DAY0, [result("1", "XX")])])).encode()
    api.mock(return_value=ok(body.replace(b"XX", b"\xff\xfe")))
    client, _ = make()
    with pytest.raises(MalformedResponseError, match="UTF-8"):
        fetch(client)


# ------------------------------------------------------------------ streaming, memory, laziness


class ChunkStream(httpx.SyncByteStream):
    """Yields the given chunks; optionally raises after them (a dropped connection)."""

    def __init__(self, chunks: list[bytes], fail: Exception | None = None) -> None:
        self.chunks = chunks
        self.fail = fail
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk
        if self.fail is not None:
            raise self.fail


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_buffer_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "CHUNK_SIZE", 1024)
    data = json.dumps(page([bucket(d, [result("0.01")] * 100) for d in days(180)])).encode()
    reader = costs_page.PageReader(iter(split(data, 1024)), 1024)
    sizes: list[int] = []
    original = reader._more

    def spy(pos: int) -> bool:
        grew = original(pos)
        sizes.append(len(reader.buf))
        return grew

    monkeypatch.setattr(reader, "_more", spy)
    count = sum(len(b.results) for b in reader.buckets())
    assert count == 18000
    assert len(data) > 3_000_000
    assert max(sizes) < 4 * 1024


def test_buckets_are_yielded_as_they_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "CHUNK_SIZE", 512)
    data = json.dumps(page([bucket(d, [result()] * 20) for d in days(50)])).encode()
    stream = ChunkStream(split(data, 512))
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=stream))
    client, _ = make(transport=transport)
    iterator = client.iter_buckets(DAY0, DAY0 + timedelta(days=49))
    first = next(iterator)
    assert first.start_time == T0
    assert stream.pulled < len(stream.chunks) / 10
    assert len(list(iterator)) == 49


def test_large_value_in_an_unknown_key_is_fine_and_amortized(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "CHUNK_SIZE", 16)
    blob = "x" * 200_000
    body = page([bucket(DAY0, [result("1", note=blob)])])
    data = json.dumps(body).encode()
    reader = costs_page.PageReader(iter(split(data, 16)), 16)
    calls = 0
    original = reader._more

    def count(pos: int) -> bool:
        nonlocal calls
        calls += 1
        return original(pos)

    monkeypatch.setattr(reader, "_more", count)
    [b] = list(reader.buckets())
    assert b.results[0].raw_json.count("x") == 200_000
    assert calls < 200  # doubling reads: about log2(200_000 / 16) re-scans, not 12_500


def test_too_deep_nesting_is_malformed(api: respx.Route) -> None:
    body = '{"data": [], "junk": ' + "[" * 100_000 + "]" * 100_000 + "}"
    api.mock(return_value=ok(body))
    client, _ = make()
    with pytest.raises(MalformedResponseError):
        fetch(client)


# ------------------------------------------------------------------ malformed bodies

MALFORMED = {
    "not json": b"<html>oops</html>",
    "empty": b"",
    "array": b"[]",
    "no data": b'{"object": "page", "has_more": false}',
    "data not list": b'{"data": {}}',
    "bucket not object": b'{"data": [1]}',
    "results not list": json.dumps({"data": [dict(bucket(DAY0), results={})]}).encode(),
    "results missing": json.dumps({"data": [{"start_time": T0, "end_time": T0 + 1}]}).encode(),
    "start missing": json.dumps({"data": [{"end_time": T0, "results": []}]}).encode(),
    "start string": json.dumps({"data": [dict(bucket(DAY0, []), start_time="1")]}).encode(),
    "end float": json.dumps({"data": [dict(bucket(DAY0, []), end_time=1.5)]}).encode(),
    "start bool": json.dumps({"data": [dict(bucket(DAY0, []), start_time=True)]}).encode(),
    "result not object": json.dumps({"data": [bucket(DAY0, [5])]}).encode(),
    "amount missing": json.dumps(page([bucket(DAY0, [{"line_item": "x"}])])).encode(),
    "amount not object": json.dumps(page([bucket(DAY0, [{"amount": 3}])])).encode(),
    "amount list": json.dumps(page([bucket(DAY0, [{"amount": [3]}])])).encode(),
    "value missing": json.dumps(page([bucket(DAY0, [{"amount": {"currency": "usd"}}])])).encode(),
    "value word": json.dumps(page([bucket(DAY0, [result("twelve")])])).encode(),
    "value empty": json.dumps(page([bucket(DAY0, [result("")])])).encode(),
    "value NaN string": json.dumps(page([bucket(DAY0, [result("NaN")])])).encode(),
    "value NaN literal": json.dumps(page([bucket(DAY0, [result(float("nan"))])])).encode(),
    "value Infinity": json.dumps(page([bucket(DAY0, [result("Infinity")])])).encode(),
    "value underscore": json.dumps(page([bucket(DAY0, [result("1_000")])])).encode(),
    "value huge exponent string": json.dumps(
        page([bucket(DAY0, [result("1e99999999999999999999999")])])
    ).encode(),
    "value huge exponent number": json.dumps(page([bucket(DAY0, [result("X")])]))
    .replace('"X"', "1e99999999999999999999999")
    .encode(),
    "value bool": json.dumps(page([bucket(DAY0, [result(True)])])).encode(),
    "value null": json.dumps(page([bucket(DAY0, [result(None)])])).encode(),
    "value object": json.dumps(page([bucket(DAY0, [result({"v": 1})])])).encode(),
    "line item number": json.dumps(page([bucket(DAY0, [result("1", 5)])])).encode(),  # type: ignore[arg-type]
    "project list": json.dumps(page([bucket(DAY0, [result("1", project_id=[])])])).encode(),
    "quantity word": json.dumps(page([bucket(DAY0, [result("1", quantity="many")])])).encode(),
    "quantity bool": json.dumps(page([bucket(DAY0, [result("1", quantity=False)])])).encode(),
    "currency number": json.dumps(
        page([bucket(DAY0, [{"amount": {"value": "1", "currency": 840}}])])
    ).encode(),
    "has_more no cursor": b'{"data": [], "has_more": true, "next_page": null}',
    "has_more empty cursor": b'{"data": [], "has_more": true, "next_page": ""}',
    "has_more string": b'{"data": [], "has_more": "false"}',
    "truncated": json.dumps(page([bucket(DAY0, [result()])])).encode()[:-3],
    "trailing garbage": json.dumps(page([])).encode() + b" x",
    "two documents": json.dumps(page([])).encode() * 2,
    "trailing comma": b'{"data": [],}',
    "key not string": b"{data: []}",
    "missing colon": b'{"data" []}',
    "result trailing comma": json.dumps(page([bucket(DAY0, [result()])]))
    .encode()
    .replace(b"}]}]", b"},]}]"),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_bodies(api: respx.Route, body: bytes) -> None:
    api.mock(return_value=ok(body))
    client, sleeps = make()
    with pytest.raises(MalformedResponseError) as info:
        fetch(client)
    assert info.value.request_id == "req_ok"
    assert "req_ok" in str(info.value)
    assert KEY not in str(info.value)
    assert client.request_count == 1 and sleeps == []  # a bad body is not retried


# ------------------------------------------------------------------ errors: never retried


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (error(401, f"Incorrect API key provided: {KEY}.", "invalid_api_key"), InvalidKeyError),
        (error(401, "Missing scopes: api.usage.read", None), PermissionDeniedError),
        (error(403, "Missing scopes: api.usage.read"), PermissionDeniedError),
        (error(403, f"key {KEY} lacks permission"), PermissionDeniedError),
        (error(400, f"Invalid start_time; key={KEY}"), BadRequestError),
        (error(400, "bad", x_should_retry="true"), BadRequestError),
        (error(401, "nope", x_should_retry="true"), InvalidKeyError),
    ],
)
def test_client_errors_are_not_retried(
    api: respx.Route, response: httpx.Response, kind: type[CostsApiError]
) -> None:
    api.mock(return_value=response)
    client, sleeps = make()
    with pytest.raises(kind) as info:
        fetch(client)
    assert type(info.value) is kind
    assert client.request_count == 1
    assert client.retry_count == 0
    assert sleeps == []
    assert info.value.status == response.status_code
    assert info.value.request_id == f"req_{response.status_code}"
    message = str(info.value)
    assert f"req_{response.status_code}" in message
    assert KEY not in message
    assert KEY[9:] not in message and KEY[-20:] not in message
    assert message.endswith(".") and "\n" not in message


def test_invalid_key_message_is_actionable(api: respx.Route) -> None:
    api.mock(
        return_value=error(401, "Incorrect API key provided: sk-admin-***Xwyz", "invalid_api_key")
    )
    client, _ = make()
    with pytest.raises(InvalidKeyError) as info:
        fetch(client)
    message = str(info.value)
    assert message.startswith(
        "OpenAI rejected the admin key sk-admin-...Xwyz (401 invalid_api_key)"
    )
    assert "read-only admin key" in message
    assert "(request req_401)" in message


def test_permission_message_explains_admin_key(api: respx.Route) -> None:
    api.mock(return_value=error(403, "Missing scopes: api.usage.read"))
    client, _ = make()
    with pytest.raises(PermissionDeniedError) as info:
        fetch(client)
    message = str(info.value)
    for phrase in ("admin key", "Organization Owner", "Read only", "api.usage.read"):
        assert phrase in message


def test_server_sk_tokens_are_scrubbed(api: respx.Route) -> None:
    api.mock(return_value=error(400, "keys sk-proj-abcdef123456 and sk-admin-***abcd are wrong"))
    client, _ = make()
    with pytest.raises(BadRequestError) as info:
        fetch(client)
    assert "sk-proj-abcdef123456" not in str(info.value)
    assert "sk-admin-***abcd" not in str(info.value)


def test_404_points_at_the_base_url(api: respx.Route) -> None:
    api.mock(return_value=error(404, "not found"))
    client, sleeps = make()
    with pytest.raises(CostsApiError, match="base URL") as info:
        fetch(client)
    assert type(info.value) is CostsApiError
    assert sleeps == []


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("", InvalidKeyError),
        ("   ", InvalidKeyError),
        ("sk-proj-abcdefghijklmnopqrstuvwx", PermissionDeniedError),
        ("sk-abcdefghijklmnopqrstuvwx", PermissionDeniedError),
        ("sk-svcacct-abcdefghijklmnopqrstuvwx", PermissionDeniedError),
        ("abcdefghijklmnopqrstuvwx", InvalidKeyError),
        ("sk-admin-abc\ndef", InvalidKeyError),
        ("sk-admin-abcdéf", InvalidKeyError),
    ],
)
def test_key_prefix_is_checked_before_any_request(
    api: respx.Route, key: str, kind: type[CostsApiError]
) -> None:
    client, _ = make(key)
    with pytest.raises(kind) as info:
        fetch(client)
    assert api.call_count == 0
    if len(key.strip()) > 8:
        assert key not in str(info.value)


# ------------------------------------------------------------------ retries


def test_retry_after_seconds_is_honoured(api: respx.Route) -> None:
    api.side_effect = [error(429, "slow down", retry_after="3"), ok(page([bucket(DAY0, [])]))]
    client, sleeps = make()
    assert len(fetch(client)) == 1
    assert sleeps == [3.0]
    assert (client.request_count, client.retry_count) == (2, 1)


def test_retry_after_ms_is_honoured_and_wins(api: respx.Route) -> None:
    api.side_effect = [
        error(429, retry_after_ms="1500", retry_after="9"),
        error(503, retry_after_ms="20"),
        ok(page([])),
    ]
    client, sleeps = make()
    fetch(client)
    assert sleeps == [1.5, 0.02]


def test_retry_after_http_date(api: respx.Route) -> None:
    api.side_effect = [
        error(
            429,
            retry_after="Wed, 21 Oct 2015 07:28:30 GMT",
            date="Wed, 21 Oct 2015 07:28:00 GMT",
        ),
        ok(page([])),
    ]
    client, sleeps = make()
    fetch(client)
    assert sleeps == [30.0]


def test_retry_after_beyond_budget_gives_up_at_once(api: respx.Route) -> None:
    api.mock(return_value=error(429, "quota", retry_after="3600"))
    client, sleeps = make(max_total_wait=120)
    with pytest.raises(RateLimitedError, match="3600 s") as info:
        fetch(client)
    assert sleeps == []
    assert client.request_count == 1
    assert "req_429" in str(info.value)


def test_rate_limit_exhausts_max_attempts(api: respx.Route) -> None:
    api.mock(return_value=error(429, "slow"))
    client, sleeps = make(max_attempts=4)
    with pytest.raises(RateLimitedError, match="after 4 attempts") as info:
        fetch(client)
    assert client.request_count == 4
    assert client.retry_count == 3
    assert len(sleeps) == 3
    assert info.value.status == 429


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504])
def test_transient_statuses_recover(api: respx.Route, status: int) -> None:
    api.side_effect = [error(status), error(status), ok(page([bucket(DAY0, [result("2")])]))]
    client, sleeps = make()
    [b] = fetch(client)
    assert b.results[0].amount == Decimal(2)
    assert len(sleeps) == 2
    assert client.retry_count == 2


def test_backoff_is_exponential_full_jitter_and_capped(api: respx.Route) -> None:
    api.mock(return_value=error(500))
    client, sleeps = make(max_attempts=9, max_total_wait=1000)
    with pytest.raises(UpstreamError, match="after 9 attempts") as info:
        fetch(client)
    ceilings = [min(8.0, 0.5 * 2**i) for i in range(8)]
    assert len(sleeps) == 8
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(sleeps, ceilings, strict=True))
    assert len(set(sleeps)) == 8  # jittered
    assert info.value.status == 500
    assert "req_500" in str(info.value)


def test_total_wait_is_capped(api: respx.Route) -> None:
    api.mock(return_value=error(503, retry_after="4"))
    client, sleeps = make(max_attempts=100, max_total_wait=10)
    with pytest.raises(UpstreamError):
        fetch(client)
    assert sleeps == [4.0, 4.0]  # a third 4 s wait would pass the 10 s budget
    assert sum(sleeps) <= 10


def test_x_should_retry_false_stops_retries(api: respx.Route) -> None:
    api.mock(return_value=error(500, x_should_retry="false"))
    client, sleeps = make()
    with pytest.raises(UpstreamError):
        fetch(client)
    assert sleeps == [] and client.request_count == 1


def test_x_should_retry_true_retries_other_statuses(api: respx.Route) -> None:
    api.side_effect = [error(404, x_should_retry="true"), ok(page([]))]
    client, sleeps = make()
    fetch(client)
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection"),
        httpx.ConnectTimeout("slow"),
    ],
)
def test_transport_errors_recover(api: respx.Route, exc: Exception) -> None:
    api.side_effect = [exc, ok(page([bucket(DAY0, [result()])]))]
    client, sleeps = make()
    assert len(fetch(client)) == 1
    assert len(sleeps) == 1


def test_transport_errors_exhausted(api: respx.Route) -> None:
    api.side_effect = httpx.ConnectError(f"cannot connect with {KEY}")
    client, sleeps = make(max_attempts=3)
    with pytest.raises(UpstreamError) as info:
        fetch(client)
    message = str(info.value)
    assert BASE in message and "after 3 attempts" in message and "ConnectError" in message
    assert KEY not in message
    assert info.value.status is None
    assert len(sleeps) == 2


def test_dropped_body_restarts_the_page_without_duplicates(api: respx.Route) -> None:
    all_days = days(6)
    page1 = ok(page([bucket(d, [result("1")] * 3) for d in all_days[:2]], "page_2"))
    full2 = json.dumps(page([bucket(d, [result("1")] * 3) for d in all_days[2:]])).encode()
    cut = full2.index(b'"start_time": %d' % ts(all_days[4]))  # two buckets complete, then drop
    broken = httpx.Response(
        200, stream=ChunkStream(split(full2[:cut], 50), httpx.RemoteProtocolError("dropped"))
    )
    api.side_effect = [page1, broken, ok(full2)]
    client, sleeps = make(page_size=180)
    seen: list[int] = []
    for b in client.iter_buckets(all_days[0], all_days[-1]):
        seen.append(b.start_time)
        assert len(b.results) == 3
    assert seen == [ts(d) for d in all_days]
    assert len(sleeps) == 1
    assert [c.request.url.params.get("page") for c in api.calls] == [None, "page_2", "page_2"]


def test_dropped_body_mid_result_recovers(
    api: respx.Route, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "CHUNK_SIZE", 7)
    full = json.dumps(page([bucket(d, [result("0.25")] * 2) for d in days(3)])).encode()
    broken = httpx.Response(200, stream=ChunkStream([full[: len(full) // 2]], httpx.ReadError("x")))
    api.side_effect = [broken, ok(full)]
    client, _ = make()
    buckets = fetch(client, DAY0, DAY0 + timedelta(days=2))
    assert [b.start_time for b in buckets] == [ts(d) for d in days(3)]
    assert sum(r.amount for b in buckets for r in b.results) == Decimal("1.50")


def test_error_body_is_read_capped(api: respx.Route) -> None:
    api.mock(return_value=httpx.Response(400, content=b"x" * 10_000_000))
    client, _ = make()
    with pytest.raises(BadRequestError) as info:
        fetch(client)
    assert len(str(info.value)) < 1000


# ------------------------------------------------------------------ test_connection


def test_connection_ok_reads_organization(api: respx.Route) -> None:
    api.mock(return_value=ok(page([bucket(DAY0, [])]), **{"openai-organization": "org-abc"}))
    client, _ = make()
    check = client.test_connection()
    assert check == ConnectionCheck(
        True, "org-abc", "Connected to OpenAI organization org-abc: the admin key can read costs."
    )
    params = api.calls.last.request.url.params
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    start = int(params["start_time"])
    assert params["limit"] == "1"
    assert start in (ts(yesterday), ts(yesterday) - 86400)  # the call may straddle midnight
    assert int(params["end_time"]) == start + 86400
    assert "group_by[]" not in params and "group_by" not in params
    assert api.call_count == 1


def test_connection_ok_without_organization_header(api: respx.Route) -> None:
    api.mock(return_value=ok(page([])))
    client, _ = make()
    check = client.test_connection()
    assert check.ok and check.organization_id is None


@pytest.mark.parametrize(
    ("key", "phrase"),
    [
        ("", "No admin key"),
        ("sk-proj-abcdefghijklmnopqrstuvwxyz", "project or user API key"),
        ("sk-abcdefghijklmnopqrstuvwxyz", "project or user API key"),
        ("hello-abcdefghijklmnopqrstuvwxyz", "does not look like an OpenAI admin key"),
    ],
)
def test_connection_prefix_checks(api: respx.Route, key: str, phrase: str) -> None:
    client, _ = make(key)
    check = client.test_connection()
    assert not check.ok
    assert phrase in check.message
    assert api.call_count == 0
    if key:
        assert key not in check.message
    if key.startswith("sk-"):
        assert "sk-admin-" in check.message and "Organization Owner" in check.message


@pytest.mark.parametrize(
    ("response", "phrase"),
    [
        (
            error(401, f"Incorrect API key provided: {KEY}", "invalid_api_key"),
            "wrong or was revoked",
        ),
        (error(403, "Missing scopes: api.usage.read"), "api.usage.read"),
        (error(401, "Missing scopes: api.usage.read"), "Organization Owner"),
        (error(400, "bad"), "invalid"),
        (ok(b"nonsense"), "cannot be read"),
    ],
)
def test_connection_failures_are_reported_not_raised(
    api: respx.Route, response: httpx.Response, phrase: str
) -> None:
    api.mock(return_value=response)
    client, sleeps = make()
    check = client.test_connection()
    assert not check.ok
    assert phrase in check.message
    assert KEY not in check.message
    assert sleeps == []


def test_connection_transport_failure_names_base_url(api: respx.Route) -> None:
    api.side_effect = httpx.ConnectError("refused")
    client, sleeps = make(max_attempts=2)
    check = client.test_connection()
    assert not check.ok
    assert BASE in check.message
    assert len(sleeps) == 1


def test_connection_lets_programming_errors_raise(api: respx.Route) -> None:
    api.side_effect = ZeroDivisionError
    client, _ = make()
    with pytest.raises(ZeroDivisionError):
        client.test_connection()


# ------------------------------------------------------------------ small helpers


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("sk-admin-0123456789abcdefabcd", "sk-admin-...abcd"),
        ("sk-proj-0123456789abcdefwxyz", "sk-proj-...wxyz"),
        ("sk-admin-short", "sk-admin-..."),
        ("", "..."),
    ],
)
def test_mask_key(key: str, masked: str) -> None:
    assert mask_key(key) == masked


def test_parsed_results_are_immutable_cost_results() -> None:
    obj = {"amount": {"value": "1.5", "currency": "usd"}, "line_item": "li", "project_id": "p",
           "api_key_id": None, "quantity": 3, "quantity_unit": None}  # fmt: skip
    built = costs_page._result(obj, "{}")
    assert built == CostResult("li", "p", None, "1.5", "usd", "3", None, "{}")
    assert type(built) is CostResult
    assert (built.amount, built.quantity) == (Decimal("1.5"), Decimal(3))
    with pytest.raises(AttributeError):
        built.amount_text = "0"  # type: ignore[misc]
    assert hash(built) == hash(CostResult("li", "p", None, "1.5", "usd", "3", None, "{}"))


def test_context_manager_closes() -> None:
    with CostsClient(KEY, BASE) as client:
        pass
    assert client._http.is_closed


def test_page_size_is_validated() -> None:
    with pytest.raises(ValueError):
        CostsClient(KEY, page_size=181)
    with pytest.raises(ValueError):
        CostsClient(KEY, page_size=0)


# ------------------------------------------------------------------ property tests (hypothesis)

KNOWN_KEYS = {
    "object", "amount", "value", "currency", "line_item", "project_id", "api_key_id", "quantity",
    "quantity_unit", "start_time", "end_time", "results", "data", "has_more", "next_page",
}  # fmt: skip
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.text(max_size=6))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
EXTRAS = st.dictionaries(
    st.text(max_size=6).filter(lambda k: k not in KNOWN_KEYS), JSON_VALUES, max_size=2
)
SEPARATORS = st.sampled_from(["", " ", "\n", "\t ", "\r\n  "])
AMOUNTS = st.decimals(
    min_value=-(10**6), max_value=10**6, places=16, allow_nan=False, allow_infinity=False
)
NUMERIC_TEXT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)


def number_text(value: Decimal, style: str) -> str:
    """JSON text for an exact decimal: a number or a string, positional or exponent form."""
    text = format(value, "e" if "exp" in style else "f")
    text = text.upper() if style.endswith("EXP") else text
    return json.dumps(text) if style.startswith("str") else text


def json_object(members: list[tuple[str, str]], sep: str) -> str:
    return "{" + ",".join(f"{sep}{json.dumps(k)}{sep}:{sep}{v}" for k, v in members) + sep + "}"


@st.composite
def result_texts(draw: st.DrawFn) -> tuple[str, tuple[Any, ...]]:
    """One result object as JSON text, and the CostResult fields it must parse to."""
    sep = draw(SEPARATORS)
    ascii_only = draw(st.booleans())
    style = draw(st.sampled_from(["fixed", "exp", "EXP", "str_fixed", "str_exp", "int"]))
    value = Decimal(draw(st.integers(-(10**12), 10**12))) if style == "int" else draw(AMOUNTS)
    amount_text = str(value) if style == "int" else number_text(value, style)
    currency = draw(st.sampled_from(["usd", None, "absent"]))
    amount_members = [("value", amount_text)]
    if currency != "absent":
        amount_members.append(("currency", json.dumps(currency)))
    members = [("amount", json_object(amount_members, sep))]
    fields: dict[str, Any] = {}
    for name in ("line_item", "project_id", "api_key_id", "quantity_unit"):
        choice = draw(st.one_of(st.none(), st.just("absent"), st.text(max_size=12)))
        if choice != "absent":
            members.append((name, json.dumps(choice, ensure_ascii=ascii_only)))
        fields[name] = None if choice == "absent" else choice
    quantity = draw(st.one_of(st.none(), st.integers(0, 10**9), AMOUNTS))
    if quantity is not None:
        members.append(
            (
                "quantity",
                number_text(Decimal(quantity), draw(st.sampled_from(["fixed", "str_exp"]))),
            )
        )
    for key, extra in draw(EXTRAS).items():
        members.append((key, json.dumps(extra, ensure_ascii=ascii_only)))
    text = json_object(draw(st.permutations(members)), sep)
    expected = (
        fields["line_item"], fields["project_id"], fields["api_key_id"], value,
        None if currency == "absent" else currency,
        None if quantity is None else Decimal(quantity), fields["quantity_unit"], text,
    )  # fmt: skip
    return text, expected


@st.composite
def valid_pages(draw: st.DrawFn) -> tuple[bytes, list[list[tuple[Any, ...]]]]:
    sep = draw(SEPARATORS)
    buckets, expected = [], []
    for i in range(draw(st.integers(0, 4))):
        drawn = draw(st.lists(result_texts(), max_size=4))
        start = T0 + i * 86400
        members = [("start_time", str(start)), ("end_time", str(start + 86400))]
        members.append(("results", "[" + f",{sep}".join(text for text, _ in drawn) + "]"))
        members += [(k, json.dumps(v)) for k, v in draw(EXTRAS).items()]
        buckets.append(json_object(draw(st.permutations(members)), sep))
        expected.append([fields for _, fields in drawn])
    members = [("data", "[" + ",".join(buckets) + "]"), ("has_more", "false")]
    members += [("next_page", "null")] if draw(st.booleans()) else []
    members += [(k, json.dumps(v)) for k, v in draw(EXTRAS).items()]
    body = sep + json_object(draw(st.permutations(members)), sep) + sep
    return body.encode("utf-8"), expected


def chunked(draw: st.DrawFn, body: bytes) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=12))))
    edges = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


def run_body(chunks: list[bytes], chunk_size: int, days_count: int = 5) -> list[CostBucket]:
    stream = ChunkStream(chunks)
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, stream=stream, headers={"x-request-id": "req_h"})
    )
    with patch.object(client_module, "CHUNK_SIZE", chunk_size):
        client = CostsClient(KEY, BASE, transport=transport, sleep=Sleeps(), max_attempts=1)
        return list(client.iter_buckets(DAY0, DAY0 + timedelta(days=days_count - 1)))


@settings(max_examples=120, deadline=None, derandomize=True)
@given(valid_pages(), st.sampled_from([1, 2, 7, 64, 1 << 18]), st.data())
def test_random_valid_pages_parse_exactly(
    page_case: tuple[bytes, list[list[tuple[Any, ...]]]], chunk_size: int, data: st.DataObject
) -> None:
    body, expected = page_case
    buckets = run_body(chunked(data.draw, body), chunk_size)
    assert [b.start_time for b in buckets] == [T0 + i * 86400 for i in range(len(expected))]
    got = [[_decimal_fields(r) for r in b.results] for b in buckets]
    assert got == expected
    with localcontext(prec=200):
        total = sum((r.amount for b in buckets for r in b.results), Decimal(0))
        want = sum((fields[3] for bucket in expected for fields in bucket), Decimal(0))
    assert total == want
    for b in buckets:
        for r in b.results:
            assert isinstance(r.amount, Decimal)
            assert json.loads(r.raw_json, parse_float=Decimal)["amount"] is not None


def _decimal_fields(r: CostResult) -> tuple[Any, ...]:
    return (*r[:3], r.amount, r.currency, r.quantity, *r[6:])


def bad_text() -> st.SearchStrategy[str]:
    return st.text(max_size=8).filter(lambda s: not NUMERIC_TEXT.fullmatch(s))


NOT_INT = st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.floats(allow_nan=False),
                    st.lists(SCALARS, max_size=2))  # fmt: skip
NOT_TEXT = st.one_of(st.booleans(), st.integers(), st.lists(SCALARS, max_size=2),
                     st.dictionaries(st.text(max_size=3), SCALARS, max_size=2))  # fmt: skip
NOT_NUMBER = st.one_of(st.none(), st.booleans(), bad_text(), st.lists(SCALARS, max_size=2),
                       st.dictionaries(st.text(max_size=3), SCALARS, max_size=2))  # fmt: skip
NOT_OBJECT = st.one_of(SCALARS, st.lists(SCALARS, max_size=3))
NOT_LIST = st.one_of(SCALARS, st.dictionaries(st.text(max_size=3), SCALARS, max_size=2))


def structure_mutations(draw: st.DrawFn, body: dict) -> None:
    """Break one structural rule of a valid page in place."""
    b = draw(st.sampled_from(body["data"]))
    r = draw(st.sampled_from(b["results"]))
    kind = draw(st.integers(0, 15))
    if kind == 0:
        del body["data"]
    elif kind == 1:
        body["data"] = draw(NOT_LIST)
    elif kind == 2:
        body["data"][0] = draw(NOT_OBJECT)
    elif kind == 3:
        del b[draw(st.sampled_from(["start_time", "end_time", "results"]))]
    elif kind == 4:
        b[draw(st.sampled_from(["start_time", "end_time"]))] = draw(NOT_INT)
    elif kind == 5:
        b["results"] = draw(NOT_LIST)
    elif kind == 6:
        b["results"][0] = draw(NOT_OBJECT)
    elif kind == 7:
        del r["amount"]
    elif kind == 8:
        r["amount"] = draw(NOT_OBJECT)
    elif kind == 9:
        del r["amount"]["value"]
    elif kind == 10:
        r["amount"]["value"] = draw(NOT_NUMBER)
    elif kind == 11:
        r[draw(st.sampled_from(["line_item", "project_id", "api_key_id", "quantity_unit"]))] = draw(
            NOT_TEXT
        )
    elif kind == 12:
        r["amount"]["currency"] = draw(NOT_TEXT)
    elif kind == 13:
        r["quantity"] = draw(NOT_NUMBER.filter(lambda v: v is not None))
    elif kind == 14:
        body["has_more"] = True
        body["next_page"] = draw(st.one_of(st.none(), st.just(""), st.integers(), st.booleans()))
    else:
        body["has_more"] = draw(st.one_of(st.integers(), st.text(max_size=3), st.lists(SCALARS)))


@st.composite
def invalid_bodies(draw: st.DrawFn) -> bytes:
    body = page(
        [bucket(d, [result(draw(st.sampled_from(["1", "0.5"])))] * draw(st.integers(1, 3)))
         for d in days(draw(st.integers(1, 3)))]
    )  # fmt: skip
    body = json.loads(json.dumps(body))  # independent copies of the shared result dicts
    how = draw(st.sampled_from(["structure", "not object", "truncate", "garbage", "utf8"]))
    if how == "structure":
        structure_mutations(draw, body)
    if how == "not object":
        return json.dumps(draw(NOT_OBJECT)).encode()
    data = json.dumps(body, ensure_ascii=draw(st.booleans())).encode()
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "garbage":
        return data + draw(st.sampled_from([b"x", b"{}", b"[", b",", b"1", b'"']))
    if how == "utf8":
        at = draw(st.integers(0, len(data)))
        return (
            data[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"]))
            + data[at:]
        )
    return data


@settings(max_examples=300, deadline=None, derandomize=True)
@given(invalid_bodies(), st.sampled_from([1, 3, 64, 1 << 18]), st.data())
def test_random_invalid_bodies_are_malformed(
    body: bytes, chunk_size: int, data: st.DataObject
) -> None:
    with pytest.raises(MalformedResponseError) as info:
        run_body(chunked(data.draw, body), chunk_size)
    assert info.value.request_id == "req_h"
    assert KEY not in str(info.value)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.one_of(st.binary(max_size=200), JSON_VALUES.map(lambda v: json.dumps(v).encode())))
def test_arbitrary_bodies_never_raise_anything_else(body: bytes) -> None:
    with contextlib.suppress(MalformedResponseError):
        run_body([body], 16)


def test_unsupported_base_url_is_not_retried() -> None:
    client = CostsClient(KEY, "ftp://example.invalid/v1", sleep=Sleeps())
    with pytest.raises(UpstreamError, match=re.escape("ftp://example.invalid/v1")):
        list(client.iter_buckets(DAY0, DAY0))
    assert client.request_count == 1


def test_oversized_value_is_malformed(api: respx.Route, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "CHUNK_SIZE", 64)
    monkeypatch.setattr(costs_page, "MAX_VALUE_CHARS", 1000)
    api.mock(return_value=ok(page([bucket(DAY0, [result("1", note="x" * 5000)])])))
    client, _ = make()
    with pytest.raises(MalformedResponseError, match="too large"):
        fetch(client)
