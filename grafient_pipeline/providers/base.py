"""What every provider shares: the shape of cost data a provider's client yields, the errors it
raises, and the Provider record the registry of providers (providers/__init__.py) lists.

A provider's client turns its API's answers into CostBuckets of CostResults (USD amounts as exact
decimal text, each result's original JSON kept); its raw SQL model stores them with the
provider's own fields (read from that JSON), and its fct SQL model maps them to fct_costs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, Protocol, overload

import msgspec


class CostResult(NamedTuple):
    """One cost result. A tuple because building millions of them is the hot path of a backfill:
    ``tuple.__new__`` (as ``_result`` does) is four times cheaper than a frozen dataclass."""

    line_item: str | None
    project_id: str | None
    api_key_id: str | None
    amount_text: str  # exact decimal text that fits DECIMAL(38, 16), e.g. "0.0001875"
    currency: str | None
    quantity_text: str | None  # same, for the quantity
    quantity_unit: str | None
    raw_json: str  # the original JSON text of this result object, exactly as received

    @property
    def amount(self) -> Decimal:
        return Decimal(self.amount_text)

    @property
    def quantity(self) -> Decimal | None:
        return None if self.quantity_text is None else Decimal(self.quantity_text)


_FIELDS_ENCODER = msgspec.json.Encoder()


class ResultBatch(Sequence[CostResult]):
    """A bucket's results as a client decoded them in bulk: normalized field records (msgspec
    structs) and each result's original JSON bytes, paired by position.

    It reads as the very CostResults a list would hold, built on access, while the staging hot
    path takes the fields as JSON lines and the raw bytes as they are (no CostResult built).
    """

    __slots__ = ("fields", "raws")

    def __init__(self, fields: list[Any], raws: list[Any]) -> None:
        # Structs with amount.value/.currency, line_item, project_id, api_key_id, quantity and
        # quantity_unit; every number an int or exact decimal text that fits DECIMAL(38, 16).
        self.fields = fields
        self.raws = raws  # bytes-like: each result's original JSON, exactly as received

    def __len__(self) -> int:
        return len(self.raws)

    @overload
    def __getitem__(self, index: int) -> CostResult: ...

    @overload
    def __getitem__(self, index: slice) -> list[CostResult]: ...

    def __getitem__(self, index: int | slice) -> CostResult | list[CostResult]:
        if isinstance(index, slice):
            return list(map(_cost_result, self.fields[index], self.raws[index]))
        return _cost_result(self.fields[index], self.raws[index])

    def __iter__(self) -> Iterator[CostResult]:
        return map(_cost_result, self.fields, self.raws)

    def __repr__(self) -> str:
        return f"ResultBatch({len(self)} results)"

    def fields_json_lines(self) -> bytes:
        """Every result's normalized fields as one JSON object per line, in order."""
        return _FIELDS_ENCODER.encode_lines(self.fields)


def _number_text(value: int | str | None) -> str | None:
    return str(value) if value.__class__ is int else value  # type: ignore[return-value]


def _cost_result(fields: Any, raw: Any) -> CostResult:
    amount = fields.amount
    return CostResult(
        fields.line_item,
        fields.project_id,
        fields.api_key_id,
        _number_text(amount.value),  # type: ignore[arg-type]
        amount.currency,
        _number_text(fields.quantity),
        fields.quantity_unit,
        bytes(raw).decode(),
    )


@dataclass(frozen=True, slots=True)
class CostBucket:
    start_time: int  # unix seconds, inclusive
    end_time: int  # unix seconds, exclusive
    results: Sequence[CostResult]  # a list, or a ResultBatch


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    organization_id: str | None
    message: str


@dataclass(frozen=True, slots=True)
class NameRecord:
    """A name a person knows for an id in the cost data: a project (OpenAI project, Anthropic
    workspace) or an API key. Only what the API shows is kept: never key material beyond the
    redacted value (or hint) the API itself gives."""

    kind: str  # "project" or "api_key"
    id: str  # matches fct_costs.project_id / fct_costs.api_key_id
    name: str | None
    status: str | None  # "active", "archived", ... as the provider says
    project_id: str | None  # an API key's project (workspace); None for a project
    redacted_value: str | None  # an API key's redacted value as the API sent it
    owner: str | None = None  # an API key's owner (user or service account name), if given


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
    """403 (or 401 "Missing scopes", or a non-admin key): the key cannot read costs (or, from
    ``iter_projects``/``iter_api_keys``, the names: skip them with a warning)."""


class BadRequestError(CostsApiError):
    """400: the provider rejected a request parameter."""


class RateLimitedError(CostsApiError):
    """429 that did not clear within the retry budget."""


class UpstreamError(CostsApiError):
    """5xx, 408/409, timeouts or connection failures that did not clear within the retry budget."""


class MalformedResponseError(CostsApiError):
    """The response body is not valid JSON or does not have the Costs API shape."""


class CostClient(Protocol):
    """What the pipeline needs of a provider's client (one instance per admin key)."""

    request_count: int

    def iter_buckets(self, start: date, end: date) -> Iterator[CostBucket]: ...

    def test_connection(self) -> ConnectionCheck: ...

    def iter_projects(self) -> Iterator[NameRecord]: ...

    def iter_api_keys(self) -> Iterator[NameRecord]: ...

    def close(self) -> None: ...

    def __enter__(self) -> CostClient: ...

    def __exit__(self, *exc_info: object) -> None: ...


@dataclass(frozen=True)
class Provider:
    """One provider: everything the rest of the code may know about it."""

    name: str  # the registry's `provider` value and fct_costs.provider: "openai"
    title: str  # for people: "OpenAI"
    key_prefix: str  # admin keys start with it: "sk-admin-"
    default_base_url: str
    base_url_setting: str  # the environment variable that overrides it
    raw_table: str  # "raw_openai_costs"
    raw_usd_column: str  # the raw table's exact USD amount (reconciled with fct_costs)
    sql_dir: Path  # the provider's SQL models: <raw_table>.sql and fct_costs_<name>.sql
    client: Callable[..., CostClient]  # (api_key, base_url, **options)
    emulator_module: str  # has add_emulator_arguments(parser) and run_from_args(args)
    # Runs before the fct model, in the slice's transaction (OpenAI: parse new line items).
    prepare_fct: Callable[[Any, Mapping[str, Any]], None] | None = None

    @property
    def fct_model(self) -> str:
        return f"fct_costs_{self.name}"
