"""CostsClient over real HTTP against the local Costs API emulator (no network, no sleeping)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from grafient_pipeline.providers.openai import client as client_module
from grafient_pipeline.providers.openai.client import (
    CostBucket,
    CostsClient,
    InvalidKeyError,
    MalformedResponseError,
    RateLimitedError,
)
from grafient_pipeline.providers.openai.emulator import CostsEmulator

ORG = "org-alpha"
KEY = "sk-admin-alpha-" + "a1b2c3d4" * 4
OTHER_ORG = "org-beta"
OTHER_KEY = "sk-admin-beta-" + "e5f6a7b8" * 4
START = date(2025, 1, 1)
END = START + timedelta(days=179)  # 180 days


def midnight(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@pytest.fixture
def emulator() -> Iterator[CostsEmulator]:
    emu = CostsEmulator(orgs={ORG: KEY, OTHER_ORG: OTHER_KEY}, seed=0, results_per_day=40)
    with emu.start():
        yield emu


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client_for(emu: CostsEmulator, key: str = KEY, **kwargs: object) -> tuple[CostsClient, Sleeps]:
    sleeps = Sleeps()
    return CostsClient(key, emu.base_url, sleep=sleeps, **kwargs), sleeps  # type: ignore[arg-type]


def by_day(buckets: list[CostBucket]) -> dict[date, Decimal]:
    return {
        datetime.fromtimestamp(b.start_time, UTC).date(): sum(
            (r.amount for r in b.results), Decimal(0)
        )
        for b in buckets
    }


def assert_contiguous(buckets: list[CostBucket], start: date, end: date) -> None:
    assert len(buckets) == (end - start).days + 1
    assert buckets[0].start_time == midnight(start)
    assert buckets[-1].end_time == midnight(end + timedelta(days=1))
    for before, after in itertools.pairwise(buckets):
        assert after.start_time == before.end_time
    for b in buckets:
        assert b.end_time - b.start_time == 86400


def assert_exact(emu: CostsEmulator, buckets: list[CostBucket], start: date, end: date) -> None:
    assert by_day(buckets) == emu.expected_totals(ORG, start, end)
    total = sum((r.amount for b in buckets for r in b.results), Decimal(0))
    assert total == emu.expected_total(ORG, start, end)


def test_180_days_at_limit_7_is_26_requests(emulator: CostsEmulator) -> None:
    client, sleeps = client_for(emulator, page_size=7)
    buckets = list(client.iter_buckets(START, END))
    assert client.request_count == 26  # ceil(180 / 7)
    assert emulator.request_count == 26
    assert sleeps == []
    assert_contiguous(buckets, START, END)
    assert_exact(emulator, buckets, START, END)
    assert sum(len(b.results) for b in buckets) > 0
    assert any(not b.results for b in buckets)  # empty days come back too


def test_180_days_in_one_request(emulator: CostsEmulator) -> None:
    client, _ = client_for(emulator)
    buckets = list(client.iter_buckets(START, END))
    assert client.request_count == 1
    assert_contiguous(buckets, START, END)
    assert_exact(emulator, buckets, START, END)


def test_results_are_complete_and_grouped(emulator: CostsEmulator) -> None:
    client, _ = client_for(emulator)
    buckets = list(client.iter_buckets(START, START + timedelta(days=9)))
    for b in buckets:
        day = datetime.fromtimestamp(b.start_time, UTC).date()
        rows = emulator.results_for_day(ORG, day)
        assert len(b.results) == len(rows)
        keys = {(r.line_item, r.project_id, r.api_key_id) for r in b.results}
        assert len(keys) == len(b.results)  # unique per (line_item, project, key)
        for r in b.results:
            assert r.currency == "usd"
            assert r.line_item is not None and r.project_id is not None
            assert json.loads(r.raw_json, parse_float=Decimal)["amount"]["value"] == r.amount


def test_other_org_is_separate(emulator: CostsEmulator) -> None:
    client, _ = client_for(emulator, OTHER_KEY)
    buckets = list(client.iter_buckets(START, START + timedelta(days=6)))
    expected = emulator.expected_totals(OTHER_ORG, START, START + timedelta(days=6))
    assert by_day(buckets) == expected
    assert expected != emulator.expected_totals(ORG, START, START + timedelta(days=6))


def test_string_amounts(emulator: CostsEmulator) -> None:
    emulator.faults.amounts_as_strings = True
    client, _ = client_for(emulator, page_size=30)
    buckets = list(client.iter_buckets(START, END))
    assert_exact(emulator, buckets, START, END)
    raw = next(r.raw_json for b in buckets for r in b.results)
    assert isinstance(json.loads(raw)["amount"]["value"], str)


def test_legacy_shape(emulator: CostsEmulator) -> None:
    emulator.faults.legacy_shape = True
    client, _ = client_for(emulator)
    buckets = list(client.iter_buckets(START, START + timedelta(days=29)))
    assert_exact(emulator, buckets, START, START + timedelta(days=29))
    results = [r for b in buckets for r in b.results]
    assert results
    assert all(r.api_key_id is None and r.quantity is None for r in results)
    assert all(r.quantity_unit is None for r in results)
    assert all('"api_key_id"' not in r.raw_json for r in results)


def test_extra_keys(emulator: CostsEmulator) -> None:
    emulator.faults.extra_keys = True
    client, _ = client_for(emulator, page_size=10)
    buckets = list(client.iter_buckets(START, START + timedelta(days=29)))
    assert_exact(emulator, buckets, START, START + timedelta(days=29))
    assert all('"organization_id"' in r.raw_json for b in buckets for r in b.results)


def test_rate_limits_are_retried_with_retry_after(emulator: CostsEmulator) -> None:
    emulator.faults.retry_after = "2"
    emulator.faults.rate_limit_first = 2
    client, sleeps = client_for(emulator, page_size=30)
    buckets = list(client.iter_buckets(START, END))
    assert sleeps == [2.0, 2.0]
    assert client.retry_count == 2
    assert client.request_count == 6 + 2
    assert_contiguous(buckets, START, END)
    assert_exact(emulator, buckets, START, END)


def test_rate_limit_every_nth_request(emulator: CostsEmulator) -> None:
    emulator.faults.rate_limit_every = 3
    client, sleeps = client_for(emulator, page_size=7)
    buckets = list(client.iter_buckets(START, END))
    assert len(sleeps) == client.retry_count > 0
    assert_exact(emulator, buckets, START, END)


def test_rate_limit_without_end_gives_up(emulator: CostsEmulator) -> None:
    emulator.faults.rate_limit_first = 100
    client, sleeps = client_for(emulator, max_attempts=3)
    with pytest.raises(RateLimitedError) as info:
        list(client.iter_buckets(START, END))
    assert len(sleeps) == 2
    assert info.value.request_id and info.value.request_id.startswith("req_")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(emulator: CostsEmulator, status: int) -> None:
    emulator.faults.server_error_status = status
    emulator.faults.server_error_first = 2
    client, sleeps = client_for(emulator, page_size=30)
    buckets = list(client.iter_buckets(START, END))
    assert len(sleeps) == 2
    assert_contiguous(buckets, START, END)
    assert_exact(emulator, buckets, START, END)


def test_truncated_body_restarts_page_without_duplicates(emulator: CostsEmulator) -> None:
    emulator.faults.truncated_first = 2
    client, sleeps = client_for(emulator, page_size=60)
    buckets = list(client.iter_buckets(START, END))
    assert len(sleeps) == 2
    assert_contiguous(buckets, START, END)  # no bucket twice, none missing
    assert_exact(emulator, buckets, START, END)


def test_malformed_body_is_reported(emulator: CostsEmulator) -> None:
    emulator.faults.malformed_first = 1
    client, sleeps = client_for(emulator)
    with pytest.raises(MalformedResponseError) as info:
        list(client.iter_buckets(START, END))
    assert sleeps == []
    assert KEY not in str(info.value)


def test_tiny_chunks_over_http(emulator: CostsEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "CHUNK_SIZE", 7)
    client, _ = client_for(emulator)
    buckets = list(client.iter_buckets(START, START + timedelta(days=4)))
    assert_exact(emulator, buckets, START, START + timedelta(days=4))


def test_connection_ok_names_the_organization(emulator: CostsEmulator) -> None:
    client, _ = client_for(emulator)
    check = client.test_connection()
    assert check.ok
    assert check.organization_id == ORG
    assert ORG in check.message


def test_unknown_and_revoked_keys(emulator: CostsEmulator) -> None:
    stranger, sleeps = client_for(emulator, "sk-admin-unknown-" + "0" * 32)
    check = stranger.test_connection()
    assert not check.ok and "wrong or was revoked" in check.message
    emulator.revoke_key(KEY)
    client, _ = client_for(emulator)
    with pytest.raises(InvalidKeyError) as info:
        list(client.iter_buckets(START, START))
    assert KEY not in str(info.value)
    assert sleeps == []


def test_unreachable_emulator_names_the_base_url(emulator: CostsEmulator) -> None:
    base_url = emulator.base_url
    emulator.stop()
    client, sleeps = client_for(emulator, max_attempts=2)
    check = client.test_connection()
    assert not check.ok
    assert base_url in check.message
    assert len(sleeps) == 1
