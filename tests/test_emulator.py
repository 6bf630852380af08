"""The Costs API emulator, over real HTTP on 127.0.0.1 (random ports, fixed clock)."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

import httpx
import pytest

from grafient_pipeline.providers.openai.emulator import (
    DEMO_ORGS,
    LINE_ITEMS,
    CostsEmulator,
    add_emulator_arguments,
    run_from_args,
)

NOW = datetime(2026, 5, 10, 13, 30, 15, tzinfo=UTC)
TODAY = NOW.date()
DAY = 86_400
ORG = "org-acme-prod"
KEY = DEMO_ORGS[ORG]
ALL_DIMS = ["project_id", "line_item", "api_key_id"]
REQUEST_ID = re.compile(r"^req_[0-9a-f]+$")


def ts(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def day_of(unix: int) -> date:
    return datetime.fromtimestamp(unix, UTC).date()


def decode(response: httpx.Response) -> dict[str, Any]:
    return json.loads(response.content, parse_float=Decimal)


def dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


@pytest.fixture
def emu() -> Iterator[CostsEmulator]:
    with CostsEmulator(seed=7, now=lambda: NOW) as emulator:
        yield emulator


@pytest.fixture
def client(emu: CostsEmulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=emu.base_url, headers=headers, timeout=10) as http:
        yield http


def costs(client: httpx.Client, **params: Any) -> httpx.Response:
    return client.get("/organization/costs", params=params)


def fetch_all(client: httpx.Client, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """All buckets of a query following next_page; returns (buckets, number of pages)."""
    buckets: list[dict[str, Any]] = []
    pages = 0
    while True:
        response = costs(client, **params)
        assert response.status_code == 200, response.text
        page = decode(response)
        pages += 1
        buckets += page["data"]
        if not page["has_more"]:
            assert page["next_page"] is None
            return buckets, pages
        params["page"] = page["next_page"]


def served_totals(buckets: list[dict[str, Any]]) -> dict[date, Decimal]:
    out: dict[date, Decimal] = {}
    with localcontext() as ctx:
        ctx.prec = 60
        for bucket in buckets:
            day = day_of(bucket["start_time"])
            amounts = (dec(r["amount"]["value"]) for r in bucket["results"])
            out[day] = out.get(day, Decimal(0)) + sum(amounts, Decimal(0))
    return out


def non_empty_day(emu: CostsEmulator, before: date = TODAY) -> date:
    day = before - timedelta(days=1)
    while not emu.results_for_day(ORG, day):
        day -= timedelta(days=1)
    return day


# --------------------------------------------------------------------------- auth


def test_admin_key_gets_200_with_headers(emu: CostsEmulator, client: httpx.Client) -> None:
    response = costs(client, start_time=ts(TODAY - timedelta(days=2)))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["openai-organization"] == ORG
    assert REQUEST_ID.match(response.headers["x-request-id"])
    assert decode(response)["object"] == "page"


@pytest.mark.parametrize(
    ("key", "status", "needle"),
    [
        ("sk-admin-unknown-0000000000000000000000000000abcd", 401, "sk-admin-***abcd"),
        ("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", 403, "Missing scopes: api.usage.read"),
        ("sk-abcdefghijklmnopqrstuvwxyz0123456789", 403, "Missing scopes: api.usage.read"),
    ],
)
def test_bad_keys(emu: CostsEmulator, key: str, status: int, needle: str) -> None:
    response = httpx.get(
        f"{emu.base_url}/organization/costs",
        params={"start_time": ts(TODAY)},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert needle in error["message"]
    assert key not in response.text
    assert error["type"] == "invalid_request_error"
    assert "openai-organization" not in response.headers
    assert REQUEST_ID.match(response.headers["x-request-id"])
    if status == 401:
        assert error["code"] == "invalid_api_key"
        assert error["param"] is None


def test_missing_header_is_401(emu: CostsEmulator) -> None:
    response = httpx.get(f"{emu.base_url}/organization/costs?start_time=0")
    assert response.status_code == 401
    assert "x-request-id" in response.headers


def test_revoked_key_is_401(emu: CostsEmulator, client: httpx.Client) -> None:
    assert costs(client, start_time=ts(TODAY)).status_code == 200
    emu.revoke_key(KEY)
    response = costs(client, start_time=ts(TODAY))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert f"sk-admin-***{KEY[-4:]}" in response.json()["error"]["message"]
    other = DEMO_ORGS["org-acme-research"]
    ok = httpx.get(
        f"{emu.base_url}/organization/costs",
        params={"start_time": ts(TODAY)},
        headers={"Authorization": f"Bearer {other}"},
    )
    assert ok.status_code == 200
    assert ok.headers["openai-organization"] == "org-acme-research"


def test_unknown_path_is_404(client: httpx.Client) -> None:
    response = client.get("/organization/usage/completions")
    assert response.status_code == 404
    assert "x-request-id" in response.headers


def test_demo_orgs_are_deterministic_admin_keys() -> None:
    assert len(DEMO_ORGS) == 2
    for key in DEMO_ORGS.values():
        assert key.startswith("sk-admin-")
        assert len(key) >= 40
    with pytest.raises(ValueError):
        CostsEmulator({"org-x": "sk-proj-nope"})


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "start_time"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"start_time": "1.5"}, "start_time"),
        ({"start_time": "1_700_000_000"}, "start_time"),
        ({"start_time": -5}, "start_time"),
        ({"start_time": 1_700_000_000, "end_time": 1_600_000_000}, "end_time"),
        ({"start_time": 1_700_000_000, "bucket_width": "1h"}, "bucket_width"),
        ({"start_time": 1_700_000_000, "limit": 0}, "limit"),
        ({"start_time": 1_700_000_000, "limit": 181}, "limit"),
        ({"start_time": 1_700_000_000, "limit": "ten"}, "limit"),
        ({"start_time": 1_700_000_000, "group_by": "model"}, "group_by"),
        ({"start_time": 1_700_000_000, "group_by": "project_id,line_item"}, "group_by"),
        ({"start_time": 1_700_000_000, "page": "garbage"}, "page"),
        ({"start_time": 1_700_000_000, "page": "page_bm90IGEgY3Vyc29y"}, "page"),
    ],
)
def test_invalid_parameters_are_400(
    client: httpx.Client, params: dict[str, Any], param: str
) -> None:
    response = costs(client, **params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error == {
        "message": error["message"],
        "type": "invalid_request_error",
        "param": param,
        "code": None,
    }
    assert "x-request-id" in response.headers


def test_limit_bounds_accepted_and_unknown_params_tolerated(client: httpx.Client) -> None:
    start = ts(TODAY - timedelta(days=200))
    assert len(decode(costs(client, start_time=start, limit=1))["data"]) == 1
    assert len(decode(costs(client, start_time=start, limit=180))["data"]) == 180
    assert len(decode(costs(client, start_time=start))["data"]) == 7
    response = costs(client, start_time=start, bucket_width="1d", foo="bar", models="x")
    assert response.status_code == 200


def test_tampered_and_foreign_cursors_are_400(client: httpx.Client) -> None:
    start = ts(TODAY - timedelta(days=30))
    cursor = decode(costs(client, start_time=start, group_by=["line_item"]))["next_page"]
    assert cursor.startswith("page_")
    middle = len(cursor) // 2
    tampered = cursor[:middle] + ("B" if cursor[middle] != "B" else "C") + cursor[middle + 1 :]
    bad = costs(client, start_time=start, group_by=["line_item"], page=tampered)
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "page"
    foreign = costs(client, start_time=start, group_by=["project_id"], page=cursor)
    assert foreign.status_code == 400
    good = costs(client, start_time=start, group_by=["line_item"], page=cursor, limit=30)
    assert good.status_code == 200


def test_both_array_encodings_give_identical_bodies(
    emu: CostsEmulator, client: httpx.Client
) -> None:
    day = non_empty_day(emu)
    project = emu.results_for_day(ORG, day)[0]["project_id"]
    base = f"start_time={ts(day - timedelta(days=5))}&end_time={ts(day + timedelta(days=1))}"
    brackets = f"{base}&group_by[]=line_item&group_by[]=project_id&project_ids[]={project}"
    plain = f"{base}&group_by=line_item&group_by=project_id&project_ids={project}"
    first = client.get(f"/organization/costs?{brackets}")
    second = client.get(f"/organization/costs?{plain}")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    results = [r for b in decode(first)["data"] for r in b["results"]]
    assert results
    assert {r["project_id"] for r in results} == {project}


# --------------------------------------------------------------------------- buckets


def test_pagination_180_days_at_limit_7(emu: CostsEmulator, client: httpx.Client) -> None:
    end = ts(TODAY)
    start = end - 180 * DAY
    buckets, pages = fetch_all(client, start_time=start, end_time=end, limit=7)
    assert pages == 26
    assert len(buckets) == 180
    assert buckets[0]["start_time"] == start
    assert buckets[-1]["end_time"] == end
    for previous, bucket in itertools.pairwise(buckets):
        assert bucket["start_time"] == previous["end_time"]
    assert all(b["end_time"] - b["start_time"] == DAY for b in buckets)
    first, last = day_of(start), TODAY - timedelta(days=1)
    assert served_totals(buckets) == emu.expected_totals(ORG, first, last)
    one_page, pages = fetch_all(client, start_time=start, end_time=end, limit=180)
    assert pages == 1
    assert one_page == buckets


def test_empty_days_come_back_with_empty_results(emu: CostsEmulator, client: httpx.Client) -> None:
    end = ts(TODAY)
    buckets, _ = fetch_all(client, start_time=end - 180 * DAY, end_time=end, limit=180)
    empty = [day_of(b["start_time"]) for b in buckets if b["results"] == []]
    assert 5 <= len(empty) <= 40
    for day in empty:
        assert emu.results_for_day(ORG, day) == []
        assert emu.expected_totals(ORG, day, day) == {day: Decimal(0)}


def test_today_is_partial_and_future_is_absent(emu: CostsEmulator, client: httpx.Client) -> None:
    start = ts(TODAY - timedelta(days=3))
    for params in ({}, {"end_time": ts(TODAY + timedelta(days=5))}):
        buckets, _ = fetch_all(client, start_time=start, group_by=ALL_DIMS, **params)
        assert len(buckets) == 4
        last = buckets[-1]
        assert (last["start_time"], last["end_time"]) == (ts(TODAY), int(NOW.timestamp()))
        leaves = emu.results_for_day(ORG, TODAY)
        included = [r for r in leaves if r["hour"] < NOW.hour]
        assert 0 < len(last["results"]) == len(included) < len(leaves)
        assert served_totals([last])[TODAY] == sum(r["amount"] for r in included)
        assert served_totals([last])[TODAY] == emu.expected_totals(ORG, TODAY, TODAY)[TODAY]
    assert list(emu.expected_totals(ORG, TODAY, TODAY + timedelta(days=3))) == [TODAY]
    future = decode(costs(client, start_time=ts(TODAY + timedelta(days=1))))
    assert future["data"] == [] and future["has_more"] is False


def test_unaligned_start_and_end_give_partial_buckets(
    emu: CostsEmulator, client: httpx.Client
) -> None:
    day = non_empty_day(emu, before=TODAY - timedelta(days=2))
    start = ts(day) + 5 * 3600 + 1800
    end = ts(day + timedelta(days=1)) + 20 * 3600 + 60
    buckets, _ = fetch_all(client, start_time=start, end_time=end, group_by=ALL_DIMS)
    assert [(b["start_time"], b["end_time"]) for b in buckets] == [
        (start, ts(day + timedelta(days=1))),
        (ts(day + timedelta(days=1)), end),
    ]
    first = [r for r in emu.results_for_day(ORG, day) if r["hour"] >= 5]
    second = [r for r in emu.results_for_day(ORG, day + timedelta(days=1)) if r["hour"] < 20]
    assert len(buckets[0]["results"]) == len(first)
    assert len(buckets[1]["results"]) == len(second)
    totals = served_totals(buckets)
    assert totals[day] == sum(r["amount"] for r in first)
    assert totals[day + timedelta(days=1)] == sum((r["amount"] for r in second), Decimal(0))


# --------------------------------------------------------------------------- data and grouping


@pytest.mark.parametrize(
    "group_by",
    [
        [],
        ["line_item"],
        ["project_id"],
        ["api_key_id"],
        ["project_id", "line_item"],
        ["line_item", "api_key_id"],
        ALL_DIMS,
    ],
)
def test_grouped_totals_match_expected_exactly(
    emu: CostsEmulator, client: httpx.Client, group_by: list[str]
) -> None:
    first = TODAY - timedelta(days=12)
    buckets, _ = fetch_all(client, start_time=ts(first), group_by=group_by, limit=5)
    assert served_totals(buckets) == emu.expected_totals(ORG, first, TODAY)
    for bucket in buckets:
        hours = 24 if day_of(bucket["start_time"]) < TODAY else NOW.hour
        leaves = [r for r in emu.results_for_day(ORG, day_of(bucket["start_time"]))]
        groups = {tuple(r[d] for d in group_by) for r in leaves if r["hour"] < hours}
        assert len(bucket["results"]) == len(groups)
        for result in bucket["results"]:
            assert result["object"] == "organization.costs.result"
            assert result["amount"]["currency"] == "usd"
            for dim in ALL_DIMS:
                assert (result[dim] is not None) == (dim in group_by)
            assert (result["quantity"] is not None) == ("line_item" in group_by)


def test_filters_select_leaves_before_grouping(emu: CostsEmulator, client: httpx.Client) -> None:
    day = non_empty_day(emu)
    leaves = emu.results_for_day(ORG, day)
    project, key = leaves[0]["project_id"], leaves[1]["api_key_id"]
    window = {"start_time": ts(day), "end_time": ts(day + timedelta(days=1))}
    by_project, _ = fetch_all(client, project_ids=[project], **window)
    assert served_totals(by_project)[day] == sum(
        r["amount"] for r in leaves if r["project_id"] == project
    )
    by_key, _ = fetch_all(
        client, **{"api_key_ids[]": [key], "group_by[]": ["api_key_id"]}, **window
    )
    assert {r["api_key_id"] for r in by_key[0]["results"]} == {key}
    nothing, _ = fetch_all(client, project_ids=["proj_does_not_exist"], **window)
    assert nothing[0]["results"] == []


def test_amounts_are_exact_text_with_up_to_16_decimals(
    emu: CostsEmulator, client: httpx.Client
) -> None:
    first = TODAY - timedelta(days=30)
    response = costs(client, start_time=ts(first), end_time=ts(TODAY), limit=30, group_by=ALL_DIMS)
    values = re.findall(rb'"value":([^,}]+)', response.content)
    assert any(re.fullmatch(rb"\d\.?\d*e-\d\d", v) for v in values)  # 1.29e-05
    assert any(re.fullmatch(rb"\d+\.\d{15}0", v) for v in values)  # 0.8958740000000000
    assert any(re.fullmatch(rb"\d+\.\d*[1-9]", v) for v in values)  # 0.4105
    for raw in values:
        amount = Decimal(raw.decode())
        assert amount > 0
        assert amount.as_tuple().exponent >= -16
    served = {
        (r["line_item"], r["project_id"], r["api_key_id"]): r["amount"]["value"]
        for b in decode(response)["data"]
        for r in b["results"]
    }
    for row in emu.results_for_day(ORG, non_empty_day(emu)):
        assert served[(row["line_item"], row["project_id"], row["api_key_id"])] == row["amount"]


def test_data_is_deterministic_per_seed(emu: CostsEmulator, client: httpx.Client) -> None:
    params = {"start_time": ts(TODAY - timedelta(days=10)), "end_time": ts(TODAY)}
    body = costs(client, **params, group_by=ALL_DIMS).content
    headers = {"Authorization": f"Bearer {KEY}"}
    for seed, same in ((7, True), (8, False)):
        with CostsEmulator(seed=seed, now=lambda: NOW) as other:
            url = f"{other.base_url}/organization/costs"
            other_body = httpx.get(url, params={**params, "group_by": ALL_DIMS}, headers=headers)
            assert (other_body.content == body) is same
    research = emu.results_for_day("org-acme-research", non_empty_day(emu))
    assert research != emu.results_for_day(ORG, non_empty_day(emu))


def test_ten_thousand_unique_leaves_per_day() -> None:
    with CostsEmulator(seed=3, results_per_day=10_000, now=lambda: NOW) as emu:
        day = non_empty_day(emu)
        headers = {"Authorization": f"Bearer {KEY}"}
        params = {"start_time": ts(day), "end_time": ts(day + timedelta(days=1))}
        response = httpx.get(
            f"{emu.base_url}/organization/costs",
            params={**params, "group_by[]": ALL_DIMS},
            headers=headers,
        )
        results = decode(response)["data"][0]["results"]
        assert len(results) == 10_000
        leaves = {(r["line_item"], r["project_id"], r["api_key_id"]) for r in results}
        assert len(leaves) == 10_000
        assert {r["line_item"] for r in results} == set(LINE_ITEMS)
        assert len(emu.results_for_day(ORG, day)) == 10_000
        assert served_totals([decode(response)["data"][0]])[day] == emu.expected_total(
            ORG, day, day
        )


def test_catalogue_uses_every_reference_line_item_form() -> None:
    for item in (
        "gpt-4o-mini-2024-07-18, input",
        "gpt-5.4-mini-2026-03-17, cached input",
        "gpt-5.4-2026-03-05, output",
        "gpt-5.6-sol, input",
        "o1-pro, output",
        "text-embedding-3-small, input",
        "gpt-audio-mini-2025-12-15 audio, input",
        "gpt-audio-mini-2025-12-15 text, output",
        "priority | gpt-5.6-sol, output, long context",
        "gpt-5.6-sol, cache writes",
        "web search tool calls",
        "Web search tool calls",
        "Vector storage",
        "ft-gpt-4o-2024-08-06, input",
        "whisper-1, audio",
        "gpt-image-2.5-flare image, output",
        "gpt-4o, input_tokens",
    ):
        assert item in LINE_ITEMS
    assert len(LINE_ITEMS) >= 40


def test_restate_day_changes_exactly_that_day(emu: CostsEmulator, client: httpx.Client) -> None:
    first = TODAY - timedelta(days=10)
    day = non_empty_day(emu)
    before_rows = emu.results_for_day(ORG, day)
    before, _ = fetch_all(client, start_time=ts(first), group_by=ALL_DIMS, limit=3)
    factor = Decimal("1.0733333333333333")
    emu.restate_day(ORG, day, factor)
    after, _ = fetch_all(client, start_time=ts(first), group_by=ALL_DIMS, limit=3)
    old, new = served_totals(before), served_totals(after)
    assert [d for d in old if old[d] != new[d]] == [day]
    assert new == emu.expected_totals(ORG, first, TODAY)
    with localcontext() as ctx:
        ctx.prec = 80
        expected = [
            (r["amount"] * factor).quantize(Decimal("1E-16"), rounding=ROUND_HALF_EVEN)
            for r in before_rows
        ]
    assert [r["amount"] for r in emu.results_for_day(ORG, day)] == expected
    for bucket in after:
        for result in bucket["results"]:
            assert result["amount"]["value"].as_tuple().exponent >= -16


# --------------------------------------------------------------------------- faults


def test_rate_limit_first_and_retry_after(emu: CostsEmulator, client: httpx.Client) -> None:
    emu.faults.rate_limit_first = 2
    statuses = [costs(client, start_time=ts(TODAY)) for _ in range(3)]
    assert [r.status_code for r in statuses] == [429, 429, 200]
    assert statuses[0].headers["retry-after"] == "1"
    assert statuses[0].json()["error"]["code"] == "rate_limit_exceeded"
    assert REQUEST_ID.match(statuses[0].headers["x-request-id"])
    emu.faults.retry_after = None
    emu.faults.rate_limit_first = 1  # re-assigning re-arms the counter
    response = costs(client, start_time=ts(TODAY))
    assert response.status_code == 429
    assert "retry-after" not in response.headers


def test_rate_limit_every_nth_request(emu: CostsEmulator, client: httpx.Client) -> None:
    emu.faults.rate_limit_every = 3
    statuses = [costs(client, start_time=ts(TODAY)).status_code for _ in range(6)]
    assert statuses == [200, 200, 429, 200, 200, 429]
    assert emu.request_count == 6


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_first(emu: CostsEmulator, client: httpx.Client, status: int) -> None:
    emu.faults.server_error_status = status
    emu.faults.server_error_first = 2
    statuses = [costs(client, start_time=ts(TODAY)) for _ in range(3)]
    assert [r.status_code for r in statuses] == [status, status, 200]
    assert "x-request-id" in statuses[0].headers
    if status == 502:
        assert statuses[0].headers["content-type"] == "text/html"
    else:
        assert statuses[0].json()["error"]["type"] == "server_error"


def test_slow_responses(emu: CostsEmulator, client: httpx.Client) -> None:
    emu.faults.slow_seconds = 0.25
    started = time.perf_counter()
    assert costs(client, start_time=ts(TODAY)).status_code == 200
    assert time.perf_counter() - started >= 0.25


def test_malformed_then_valid(emu: CostsEmulator, client: httpx.Client) -> None:
    emu.faults.malformed_first = 1
    bad = costs(client, start_time=ts(TODAY))
    assert bad.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad.content)
    assert decode(costs(client, start_time=ts(TODAY)))["object"] == "page"


def test_truncated_body_drops_connection(emu: CostsEmulator, client: httpx.Client) -> None:
    emu.faults.truncated_first = 1
    with pytest.raises(httpx.RemoteProtocolError):
        costs(client, start_time=ts(TODAY - timedelta(days=3)), group_by=ALL_DIMS)
    assert costs(client, start_time=ts(TODAY)).status_code == 200


def test_faults_only_hit_would_be_successes(emu: CostsEmulator, client: httpx.Client) -> None:
    emu.faults.malformed_first = 1
    assert costs(client).status_code == 400
    assert costs(client, start_time=ts(TODAY)).content.startswith(b'{"object":"page","data":[{')
    assert emu.request_count == 2


@pytest.mark.parametrize("quirk", ["amounts_as_strings", "extra_keys", "legacy_shape"])
def test_shape_quirks_keep_totals(emu: CostsEmulator, client: httpx.Client, quirk: str) -> None:
    setattr(emu.faults, quirk, True)
    first = TODAY - timedelta(days=6)
    buckets, _ = fetch_all(client, start_time=ts(first), group_by=ALL_DIMS, limit=2)
    assert served_totals(buckets) == emu.expected_totals(ORG, first, TODAY)
    page = decode(costs(client, start_time=ts(first), group_by=ALL_DIMS))
    results = [r for b in page["data"] for r in b["results"]]
    assert results
    if quirk == "amounts_as_strings":
        assert all(isinstance(r["amount"]["value"], str) for r in results)
    if quirk == "extra_keys":
        assert page["organization_id"] == ORG
        assert all("organization_id" in b for b in page["data"])
        assert all(r["organization_id"] == ORG for r in results)
    if quirk == "legacy_shape":
        for result in results:
            assert not {"api_key_id", "quantity", "quantity_unit"} & set(result)


def test_request_count_counts_every_status(emu: CostsEmulator, client: httpx.Client) -> None:
    costs(client, start_time=ts(TODAY))
    costs(client)
    client.get("/nowhere")
    httpx.get(f"{emu.base_url}/organization/costs")
    assert emu.request_count == 4


# --------------------------------------------------------------------------- command line


def test_add_emulator_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_emulator_arguments(parser)
    args = parser.parse_args([])
    assert (args.port, args.host, args.org, args.seed, args.results_per_day) == (
        8787,
        "127.0.0.1",
        None,
        0,
        40,
    )
    args = parser.parse_args(
        ["--org", "org-a=sk-admin-aaaa", "--org", "org-b=sk-admin-bbbb", "--seed", "3"]
    )
    assert args.org == [("org-a", "sk-admin-aaaa"), ("org-b", "sk-admin-bbbb")]
    with pytest.raises(SystemExit):
        parser.parse_args(["--org", "no-equals-sign"])


def test_run_from_args_reports_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        parser = argparse.ArgumentParser()
        add_emulator_arguments(parser)
        args = parser.parse_args(["--port", str(busy.getsockname()[1])])
        assert run_from_args(args) == 1
    assert "cannot start" in capsys.readouterr().err


def test_run_from_args_prints_base_url_and_stops_on_sigterm() -> None:
    key = "sk-admin-cli-test-0123456789abcdef0123456789abcdef"
    command = [sys.executable, "-m", "grafient_pipeline.providers.openai.emulator", "--port", "0"]
    command += ["--org", f"org-cli={key}", "--results-per-day", "5"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        base_url = lines[1].removeprefix("Base URL:").strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url)
        assert f"GRAFIENT_OPENAI_BASE_URL={base_url}" in lines[2]
        response = httpx.get(
            f"{base_url}/organization/costs",
            params={"start_time": int(time.time()) - 3 * DAY},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200
        assert response.headers["openai-organization"] == "org-cli"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert key in "".join(lines) + proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
