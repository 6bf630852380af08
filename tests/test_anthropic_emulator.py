"""The Anthropic Admin API emulator over real HTTP, alone and with the real client."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from grafient_pipeline.providers.anthropic.client import AnthropicCostsClient
from grafient_pipeline.providers.anthropic.emulator import (
    DEMO_ORGS,
    AnthropicEmulator,
    add_emulator_arguments,
    run_from_args,
)
from grafient_pipeline.providers.base import (
    InvalidKeyError,
    MalformedResponseError,
    PermissionDeniedError,
)

NOW = datetime(2026, 5, 10, 13, 30, tzinfo=UTC)
ORG = "org-hand"
KEY = "sk-ant-admin01-hand-0123456789abcdef"
HAND_DAY = date(2026, 5, 3)
VERSION = {"anthropic-version": "2023-06-01"}


@pytest.fixture(scope="module")
def emu() -> Iterator[AnthropicEmulator]:
    with AnthropicEmulator({ORG: KEY}, seed=7, results_per_day=3, now=lambda: NOW) as running:
        yield running


@pytest.fixture
def http(emu: AnthropicEmulator) -> Iterator[httpx.Client]:
    emu.faults = type(emu.faults)()
    with httpx.Client(base_url=emu.base_url + "/", headers={"x-api-key": KEY, **VERSION}) as c:
        yield c


def client(emu: AnthropicEmulator, **options: Any) -> AnthropicCostsClient:
    sleeps: list[float] = options.pop("sleeps", [])
    return AnthropicCostsClient(KEY, emu.base_url, sleep=sleeps.append, **options)


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert response.headers["request-id"].startswith("req_")
    return response.status_code, body["error"]["type"], body["error"]["message"]


def report(http: httpx.Client, **params: Any) -> httpx.Response:
    return http.get("organizations/cost_report", params=params)


def test_the_hand_computed_day_is_exact_to_the_last_digit(emu: AnthropicEmulator) -> None:
    # The day's three results, in cents as served:
    #   342537 tokens x 0.001875 c (Opus 4.1 cache write 5m)       = 642.256875
    #    17522 tokens x 0.003 c    (Opus 4.1 cache write 1h)        =  52.566
    #    86094 tokens x 0.0006 c   (Sonnet 4.5 input, long context) =  51.6564
    # sum 746.479275 cents = 7.46479275 USD
    with client(emu) as c:
        (bucket,) = c.iter_buckets(HAND_DAY, HAND_DAY)
    served = sorted(r.raw_json for r in bucket.results)
    assert [s.split('"amount": ')[1].split(",")[0] for s in served] == [
        '"51.6564"',
        '"52.566"',
        '"642.256875"',
    ]
    assert sorted(r.amount_text for r in bucket.results) == ["0.516564", "0.52566", "6.42256875"]
    total = sum((r.amount for r in bucket.results), Decimal(0))
    assert str(total) == "7.46479275"
    assert emu.expected_totals(ORG, HAND_DAY, HAND_DAY) == {HAND_DAY: Decimal("7.46479275")}


def test_null_workspace_is_the_default_workspace(emu: AnthropicEmulator) -> None:
    with client(emu) as c:
        (bucket,) = c.iter_buckets(HAND_DAY, HAND_DAY)
        workspaces = {p.id for p in c.iter_projects()}
    ids = [r.project_id for r in bucket.results]
    assert ids.count(None) == 2  # the two Opus lines ran in the default workspace
    assert {i for i in ids if i is not None} <= workspaces


def test_totals_match_across_pages(emu: AnthropicEmulator) -> None:
    start, end = date(2026, 4, 1), date(2026, 5, 9)
    with client(emu, page_size=7) as c:
        buckets = list(c.iter_buckets(start, end))
        requests = c.request_count
    assert requests == 6  # 39 days, 7 a page
    got = {
        datetime.fromtimestamp(b.start_time, UTC).date(): sum(
            (r.amount for r in b.results), Decimal(0)
        )
        for b in buckets
    }
    assert got == emu.expected_totals(ORG, start, end)


def test_today_is_partial_and_the_future_absent(emu: AnthropicEmulator) -> None:
    today = NOW.date()
    with client(emu) as c:
        buckets = list(c.iter_buckets(today - timedelta(days=1), today + timedelta(days=2)))
    assert len(buckets) == 2
    expected = emu.expected_totals(ORG, today, today)[today]
    assert sum((r.amount for r in buckets[1].results), Decimal(0)) == expected
    full = sum(leaf.units for leaf in emu.leaves(ORG, today))
    partial = sum(leaf.units for leaf in emu.leaves(ORG, today, NOW.hour))
    assert expected == Decimal(partial).scaleb(-12) and partial <= full


def test_pagination_cursor_over_http(http: httpx.Client) -> None:
    first = report(http, starting_at="2026-04-01T00:00:00Z", ending_at="2026-04-06T00:00:00Z",
                   limit=2).json()  # fmt: skip
    assert [b["starting_at"] for b in first["data"]] == [
        "2026-04-01T00:00:00Z",
        "2026-04-02T00:00:00Z",
    ]
    assert first["has_more"] is True and first["next_page"]
    second = report(http, starting_at="2026-04-01T00:00:00Z", ending_at="2026-04-06T00:00:00Z",
                    limit=2, page=first["next_page"]).json()  # fmt: skip
    assert second["data"][0]["starting_at"] == "2026-04-03T00:00:00Z"
    other = report(http, starting_at="2026-04-02T00:00:00Z", page=first["next_page"])
    assert error_of(other)[:2] == (400, "invalid_request_error")


def test_ungrouped_results_have_null_dimensions(http: httpx.Client) -> None:
    body = report(http, starting_at="2026-05-03T00:00:00Z", ending_at="2026-05-04T00:00:00Z").json()
    (bucket,) = body["data"]
    (only,) = bucket["results"]
    assert only["amount"] == "746.479275" and only["currency"] == "USD"
    assert {k for k, v in only.items() if v is not None} == {"amount", "currency"}


@pytest.mark.parametrize(
    ("params", "phrase"),
    [
        ({}, "starting_at"),
        ({"starting_at": "yesterday"}, "RFC 3339"),
        ({"starting_at": "2026-05-01T00:00:00"}, "timezone"),
        ({"starting_at": "2026-05-01T00:00:00Z", "ending_at": "2026-04-01T00:00:00Z"}, "after"),
        ({"starting_at": "2026-05-01T00:00:00Z", "bucket_width": "1h"}, "bucket_width"),
        ({"starting_at": "2026-05-01T00:00:00Z", "limit": "32"}, "between 1 and 31"),
        ({"starting_at": "2026-05-01T00:00:00Z", "limit": "0"}, "between 1 and 31"),
        ({"starting_at": "2026-05-01T00:00:00Z", "group_by[]": "model"}, "group_by"),
        ({"starting_at": "2026-05-01T00:00:00Z", "page": "nope"}, "page"),
    ],
)
def test_parameter_validation_uses_anthropics_error_shape(
    http: httpx.Client, params: dict[str, str], phrase: str
) -> None:
    status, kind, message = error_of(report(http, **params))
    assert (status, kind) == (400, "invalid_request_error") and phrase in message


def test_auth_errors(emu: AnthropicEmulator, http: httpx.Client) -> None:
    url = "organizations/cost_report?starting_at=2026-05-01T00:00:00Z"
    assert error_of(httpx.get(emu.base_url + "/" + url, headers=VERSION))[:2] == (
        401,
        "authentication_error",
    )
    wrong = {"x-api-key": "sk-ant-admin01-wrong-000000000000", **VERSION}
    assert error_of(httpx.get(emu.base_url + "/" + url, headers=wrong))[:2] == (
        401,
        "authentication_error",
    )
    regular = {"x-api-key": "sk-ant-api03-regular-0000000000000", **VERSION}
    assert error_of(httpx.get(emu.base_url + "/" + url, headers=regular))[:2] == (
        403,
        "permission_error",
    )
    no_version = httpx.get(emu.base_url + "/" + url, headers={"x-api-key": KEY})
    assert error_of(no_version)[2] == "anthropic-version: header is required"
    assert error_of(http.get("organizations/nothing"))[:2] == (404, "not_found_error")


def test_client_errors_for_bad_and_regular_keys(emu: AnthropicEmulator) -> None:
    with AnthropicCostsClient("sk-ant-admin01-wrong-000000000000", emu.base_url) as c:
        with pytest.raises(InvalidKeyError, match="rejected the admin key"):
            list(c.iter_buckets(HAND_DAY, HAND_DAY))
        assert not c.test_connection().ok


def test_revoked_key_is_401() -> None:
    with AnthropicEmulator({ORG: KEY}, now=lambda: NOW) as emu:
        emu.revoke_key(KEY)
        with client(emu) as c, pytest.raises(InvalidKeyError):
            list(c.iter_buckets(HAND_DAY, HAND_DAY))


def test_429_with_retry_after_is_waited_out(emu: AnthropicEmulator, http: httpx.Client) -> None:
    emu.faults.retry_after = "2"
    emu.faults.rate_limit_first = 1
    sleeps: list[float] = []
    with client(emu, sleeps=sleeps) as c:
        (bucket,) = c.iter_buckets(HAND_DAY, HAND_DAY)
    assert sleeps == [2.0] and len(bucket.results) == 3
    emu.faults.rate_limit_first = 1
    status, kind, _ = error_of(report(http, starting_at="2026-05-01T00:00:00Z"))
    assert (status, kind) == (429, "rate_limit_error")


@pytest.mark.parametrize("status", [500, 502, 529])
def test_server_errors_are_retried(emu: AnthropicEmulator, http: httpx.Client, status: int) -> None:
    emu.faults.server_error_status = status
    emu.faults.server_error_first = 1
    sleeps: list[float] = []
    with client(emu, sleeps=sleeps) as c:
        (bucket,) = c.iter_buckets(HAND_DAY, HAND_DAY)
    assert len(sleeps) == 1 and len(bucket.results) == 3


def test_malformed_and_truncated_faults(emu: AnthropicEmulator, http: httpx.Client) -> None:
    emu.faults.malformed_first = 1
    with client(emu) as c, pytest.raises(MalformedResponseError):
        list(c.iter_buckets(HAND_DAY, HAND_DAY))
    emu.faults.truncated_first = 1
    sleeps: list[float] = []
    with client(emu, sleeps=sleeps) as c:
        (bucket,) = c.iter_buckets(HAND_DAY, HAND_DAY)
    assert len(sleeps) == 1 and len(bucket.results) == 3


def test_restate_day_changes_what_is_served() -> None:
    with AnthropicEmulator({ORG: KEY}, seed=7, results_per_day=3, now=lambda: NOW) as emu:
        emu.restate_day(ORG, HAND_DAY, Decimal("2"))
        assert emu.expected_totals(ORG, HAND_DAY, HAND_DAY) == {HAND_DAY: Decimal("14.9295855")}
        with client(emu) as c:
            (bucket,) = c.iter_buckets(HAND_DAY, HAND_DAY)
        assert sum((r.amount for r in bucket.results), Decimal(0)) == Decimal("14.9295855")


def test_names_match_the_cost_data(emu: AnthropicEmulator, http: httpx.Client) -> None:
    with client(emu) as c:
        projects = list(c.iter_projects())
        keys = list(c.iter_api_keys())
        with_costs = {
            r.project_id
            for b in c.iter_buckets(date(2026, 4, 1), date(2026, 5, 9))
            for r in b.results
        }
    assert {p.status for p in projects} == {"active", "archived"}
    assert with_costs - {None} <= {p.id for p in projects}
    assert {k.project_id for k in keys} == {None} | {p.id for p in projects}
    assert all(k.redacted_value and k.redacted_value.startswith("sk-ant-api03-") for k in keys)
    assert all("..." in (k.redacted_value or "") for k in keys)
    page1 = http.get("organizations/api_keys", params={"limit": 3}).json()
    page2 = http.get(
        "organizations/api_keys", params={"limit": 3, "after_id": page1["last_id"]}
    ).json()
    assert (
        page1["has_more"]
        and [k["id"] for k in page1["data"] + page2["data"]] == [k.id for k in keys][:6]
    )
    active_only = http.get("organizations/workspaces").json()["data"]
    assert len(active_only) == len(projects) - 1


def test_names_endpoints_refuse_a_regular_key(emu: AnthropicEmulator) -> None:
    regular = "sk-ant-api03-regular-0000000000000"
    with AnthropicCostsClient(regular, emu.base_url) as c, pytest.raises(PermissionDeniedError):
        list(c.iter_projects())


def test_data_is_deterministic_and_seeded() -> None:
    a = AnthropicEmulator({ORG: KEY}, seed=1, now=lambda: NOW)
    b = AnthropicEmulator({ORG: KEY}, seed=1, now=lambda: NOW)
    c = AnthropicEmulator({ORG: KEY}, seed=2, now=lambda: NOW)
    window = (date(2026, 3, 1), date(2026, 4, 30))
    assert a.expected_totals(ORG, *window) == b.expected_totals(ORG, *window)
    assert a.expected_totals(ORG, *window) != c.expected_totals(ORG, *window)
    zero_days = [d for d, v in a.expected_totals(ORG, *window).items() if v == 0]
    assert 0 < len(zero_days) < 20  # about one day in ten has no spend


def test_demo_org_and_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(DEMO_ORGS) == ["org-acme-claude"]
    assert DEMO_ORGS["org-acme-claude"].startswith("sk-ant-admin01-demo-acme-claude-")
    parser = argparse.ArgumentParser()
    add_emulator_arguments(parser)
    args = parser.parse_args([])
    assert (args.port, args.org, args.results_per_day) == (8788, None, 24)
    with pytest.raises(SystemExit):
        parser.parse_args(["--org", "org-x=sk-admin-openai-key"])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert run_from_args(parser.parse_args(["--port", str(busy.getsockname()[1])])) == 1
    assert "cannot start" in capsys.readouterr().err
