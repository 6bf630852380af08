"""The Anthropic cost report client against canned HTTP answers: the request it sends, cents to
exact USD, the original JSON kept, paging, key checks, Anthropic's errors and the names calls."""

from __future__ import annotations

import json
import random
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from grafient_pipeline.providers.anthropic.client import AnthropicCostsClient
from grafient_pipeline.providers.anthropic.cost_page import cents_to_usd, parse_page
from grafient_pipeline.providers.base import (
    BadRequestError,
    InvalidKeyError,
    MalformedResponseError,
    PermissionDeniedError,
    RateLimitedError,
)
from grafient_pipeline.providers.http import PageFormatError

BASE = "https://api.anthropic.com/v1"
KEY = "sk-ant-admin01-Zq7vX2mN9pL4kR8tY1wE5uI3oA6sD0fG2hJ4kL6zXwyz"


def result(amount: Any = "123.45", **fields: Any) -> dict[str, Any]:
    item = {
        "amount": amount,
        "context_window": "0-200k",
        "cost_type": "tokens",
        "currency": "USD",
        "description": "Claude Sonnet 4.5 Usage - Input Tokens",
        "model": "claude-sonnet-4-5-20250929",
        "service_tier": "standard",
        "token_type": "uncached_input_tokens",
        "workspace_id": "wrkspc_01",
    }
    item.update(fields)
    return item


def bucket(day: date, results: list[dict[str, Any]]) -> dict[str, Any]:
    nxt = date.fromordinal(day.toordinal() + 1)
    return {
        "starting_at": f"{day.isoformat()}T00:00:00Z",
        "ending_at": f"{nxt.isoformat()}T00:00:00Z",
        "results": results,
    }


def page(buckets: list[dict[str, Any]], next_page: str | None = None) -> dict[str, Any]:
    return {"data": buckets, "has_more": next_page is not None, "next_page": next_page}


class Api:
    """A MockTransport answering from a list of (status, body, headers), recording requests."""

    def __init__(self, *answers: tuple[int, Any, dict[str, str]]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body, headers = self.answers.pop(0)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers)


def make(api: Api, key: str = KEY, **options: Any) -> tuple[AnthropicCostsClient, list[float]]:
    sleeps: list[float] = []
    client = AnthropicCostsClient(
        key, BASE, transport=httpx.MockTransport(api), sleep=sleeps.append,
        rng=random.Random(0), **options,
    )  # fmt: skip
    return client, sleeps


def error(status: int, kind: str, message: str, **headers: str) -> tuple[int, Any, dict]:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return status, body, {"request-id": f"req_{status}", **headers}


def test_request_has_the_cost_report_query_and_headers() -> None:
    api = Api((200, page([]), {}))
    client, _ = make(api)
    assert list(client.iter_buckets(date(2026, 11, 1), date(2026, 11, 3))) == []
    request = api.requests[0]
    assert request.url.path == "/v1/organizations/cost_report"
    assert request.url.params.multi_items() == [
        ("starting_at", "2026-11-01T00:00:00Z"),
        ("ending_at", "2026-11-04T00:00:00Z"),
        ("bucket_width", "1d"),
        ("limit", "3"),
        ("group_by[]", "workspace_id"),
        ("group_by[]", "description"),
    ]
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers


def test_limit_is_at_most_31_buckets() -> None:
    api = Api((200, page([]), {}))
    client, _ = make(api)
    list(client.iter_buckets(date(2026, 1, 1), date(2026, 3, 31)))
    assert api.requests[0].url.params["limit"] == "31"
    with pytest.raises(ValueError, match=r"1\.\.31"):
        AnthropicCostsClient(KEY, BASE, page_size=32)


def test_cents_become_exact_usd_and_the_original_json_is_kept() -> None:
    text = (
        '{"data":[{"starting_at":"2026-11-01T00:00:00Z","ending_at":"2026-11-02T00:00:00Z",'
        '"results":[ {"amount": "123.45", "currency":"USD", "workspace_id":null,'
        '"description":"Claude \\"Opus\\" Usage","cost_type":"tokens"} ,'
        '{"amount":"0.0000000000001","currency":"USD","description":null,"cost_type":"web_search",'
        '"model":null,"token_type":null,"workspace_id":"wrkspc_1"}]}],"has_more":false,'
        '"next_page":null}'
    )
    buckets, has_more, cursor = parse_page(text)
    assert (has_more, cursor) == (False, None)
    (only,) = buckets
    assert (only.start_time, only.end_time) == (1793491200, 1793577600)
    first, second = only.results
    assert first.amount_text == "1.2345" and first.amount == Decimal("1.2345")
    assert first.raw_json == (
        '{"amount": "123.45", "currency":"USD", "workspace_id":null,'
        '"description":"Claude \\"Opus\\" Usage","cost_type":"tokens"}'
    )
    assert first.line_item == 'Claude "Opus" Usage' and first.project_id is None
    assert (first.api_key_id, first.quantity_text, first.quantity_unit) == (None, None, None)
    assert second.amount_text == "0.000000000000001"  # 1e-13 cents = 1e-15 USD
    assert second.line_item == "web_search" and second.project_id == "wrkspc_1"


@pytest.mark.parametrize(
    ("cents", "usd"),
    [
        ("123.45", "1.2345"),
        ("7", "0.07"),
        (7, "0.07"),
        ("0", "0"),
        ("-250.5", "-2.505"),
        ("12.3400000000000000", "0.1234"),
        ("1e2", "1"),
        ("99999999999999999999.99", "999999999999999999.9999"),
        ("0.00000000000001", "0.0000000000000001"),
    ],
)
def test_cents_to_usd_is_exact(cents: Any, usd: str) -> None:
    assert cents_to_usd(cents) == usd
    assert Decimal(cents_to_usd(cents)) == Decimal(str(cents)) / 100


@pytest.mark.parametrize(
    "cents", ["0.000000000000001", "1e40", "12.3.4", "", "NaN", "Infinity", None, True, 1.5]
)
def test_amounts_that_do_not_fit_are_refused(cents: Any) -> None:
    with pytest.raises(PageFormatError):
        cents_to_usd(cents)


def test_a_composed_line_item_when_not_grouped_by_description() -> None:
    text = json.dumps(
        page([bucket(date(2026, 1, 1), [result(description=None, service_tier="batch")])])
    )
    (only,) = parse_page(text)[0]
    assert only.results[0].line_item == (
        "claude-sonnet-4-5-20250929, tokens, uncached_input_tokens, batch, 0-200k"
    )


def test_pages_follow_next_page_until_has_more_is_false() -> None:
    days = [date(2026, 1, d) for d in (1, 2, 3)]
    api = Api(
        (200, page([bucket(days[0], [result()])], "cursor-1"), {}),
        (200, page([bucket(days[1], [result("1")])], "cursor-2"), {}),
        (200, page([bucket(days[2], [])]), {}),
    )
    client, _ = make(api, page_size=1)
    buckets = list(client.iter_buckets(days[0], days[2]))
    assert [len(b.results) for b in buckets] == [1, 1, 0]
    assert [r.url.params.get("page") for r in api.requests] == [None, "cursor-1", "cursor-2"]
    assert client.request_count == 3


def test_a_repeated_cursor_is_malformed() -> None:
    day = date(2026, 1, 1)
    api = Api((200, page([], "same"), {}), (200, page([], "same"), {}))
    client, _ = make(api)
    with pytest.raises(MalformedResponseError, match="repeats"):
        list(client.iter_buckets(day, day))


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"data": 3}', b'{"data":[{"results":[]}]}', b'{"data":[],"has_more":true}',
     b'{"data":[]} x', json.dumps(page([bucket(date(2026, 1, 1), [{"x": 1}])])).encode()],
)  # fmt: skip
def test_malformed_bodies_raise_one_clear_error(body: bytes) -> None:
    api = Api((200, body, {"request-id": "req_bad"}))
    client, _ = make(api)
    with pytest.raises(MalformedResponseError) as info:
        list(client.iter_buckets(date(2026, 1, 1), date(2026, 1, 1)))
    assert "Anthropic's Admin API" in str(info.value) and "req_bad" in str(info.value)


@pytest.mark.parametrize(
    ("key", "kind", "phrase"),
    [
        ("sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123", PermissionDeniedError, "regular Anthropic"),
        ("", InvalidKeyError, "No admin key"),
        ("sk-admin-openai-abcdefghijklmnopqrstuvwxyz", InvalidKeyError, "start with sk-ant-admin"),
        ("sk-ant-admin01 with space", InvalidKeyError, "spaces"),
    ],
)
def test_keys_that_cannot_read_costs_are_refused_before_any_request(
    key: str, kind: type[Exception], phrase: str
) -> None:
    api = Api()
    client, _ = make(api, key=key)
    with pytest.raises(kind, match=phrase) as info:
        list(client.iter_buckets(date(2026, 1, 1), date(2026, 1, 1)))
    assert api.requests == []
    if key:
        assert key not in str(info.value)
    check = client.test_connection()
    assert not check.ok and phrase.split()[0] in check.message
    if kind is PermissionDeniedError:
        assert "platform.claude.com/settings/admin-keys" in check.message


def test_401_names_the_masked_key_and_what_to_do() -> None:
    api = Api(error(401, "authentication_error", f"invalid x-api-key {KEY}"))
    client, sleeps = make(api)
    with pytest.raises(InvalidKeyError) as info:
        list(client.iter_buckets(date(2026, 1, 1), date(2026, 1, 1)))
    message = str(info.value)
    assert KEY not in message and "sk-ant-admin01-...Xwyz" in message
    assert "authentication_error" in message and "req_401" in message
    assert sleeps == [] and client.request_count == 1


def test_403_and_400_are_never_retried() -> None:
    api = Api(error(403, "permission_error", "no access"), error(400, "invalid_request_error", "x"))
    client, sleeps = make(api)
    with pytest.raises(PermissionDeniedError, match="Admin API key"):
        list(client.iter_buckets(date(2026, 1, 1), date(2026, 1, 1)))
    with pytest.raises(BadRequestError, match="rejected the cost report request"):
        list(client.iter_buckets(date(2026, 1, 1), date(2026, 1, 1)))
    assert sleeps == [] and client.request_count == 2


def test_429_waits_as_retry_after_says_and_529_is_retried() -> None:
    day = date(2026, 1, 1)
    api = Api(
        error(429, "rate_limit_error", "slow down", **{"retry-after": "3"}),
        error(529, "overloaded_error", "Overloaded"),
        (200, page([bucket(day, [result()])]), {}),
    )
    client, sleeps = make(api)
    (only,) = client.iter_buckets(day, day)
    assert only.results[0].amount_text == "1.2345"
    assert sleeps[0] == 3.0 and len(sleeps) == 2 and client.retry_count == 2


def test_429_that_never_clears_is_rate_limited() -> None:
    api = Api(*[error(429, "rate_limit_error", "slow", **{"retry-after": "0"})] * 3)
    client, _ = make(api, max_attempts=3)
    with pytest.raises(RateLimitedError, match="after 3 attempts"):
        list(client.iter_buckets(date(2026, 1, 1), date(2026, 1, 1)))


def test_connection_reads_the_organization() -> None:
    me = {"id": "12345678-1234-5678-1234-567812345678", "name": "Acme", "type": "organization"}
    api = Api((200, me, {}), (200, page([]), {}))
    client, _ = make(api)
    check = client.test_connection()
    assert check.ok and check.organization_id == me["id"]
    assert "Acme" in check.message and me["id"] in check.message
    assert [r.url.path for r in api.requests] == [
        "/v1/organizations/me",
        "/v1/organizations/cost_report",
    ]


def test_names_are_paged_with_after_id_and_keep_only_the_hint() -> None:
    ws = [{"id": "wrkspc_a", "name": "A", "archived_at": None},
          {"id": "wrkspc_b", "name": "B", "archived_at": "2026-01-01T00:00:00Z"}]  # fmt: skip
    api = Api(
        (200, {"data": ws[:1], "has_more": True, "last_id": "wrkspc_a"}, {}),
        (200, {"data": ws[1:], "has_more": False, "last_id": "wrkspc_b"}, {}),
        (200, {"data": [{"id": "apikey_1", "name": "ci", "workspace_id": "wrkspc_a",
                         "status": "active", "partial_key_hint": "sk-ant-api03-R2D...igAA"}],
               "has_more": False, "first_id": "apikey_1", "last_id": "apikey_1"}, {}),
    )  # fmt: skip
    client, _ = make(api)
    projects = list(client.iter_projects())
    assert [(p.kind, p.id, p.name, p.status) for p in projects] == [
        ("project", "wrkspc_a", "A", "active"),
        ("project", "wrkspc_b", "B", "archived"),
    ]
    assert api.requests[0].url.params["include_archived"] == "true"
    assert api.requests[1].url.params["after_id"] == "wrkspc_a"
    (key,) = client.iter_api_keys()
    assert (key.kind, key.id, key.name, key.status, key.project_id, key.redacted_value) == (
        "api_key", "apikey_1", "ci", "active", "wrkspc_a", "sk-ant-api03-R2D...igAA"
    )  # fmt: skip
    assert api.requests[2].url.path == "/v1/organizations/api_keys"


def test_names_403_is_a_permission_error_that_says_costs_still_sync() -> None:
    api = Api(error(403, "permission_error", "nope"))
    client, sleeps = make(api)
    with pytest.raises(PermissionDeniedError) as info:
        list(client.iter_api_keys())
    assert "API keys" in str(info.value) and "costs still sync" in str(info.value)
    assert info.value.status == 403 and sleeps == []
