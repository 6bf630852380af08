"""The data side of the Anthropic cost report emulator: catalogue, workspaces, keys and days.

Amounts are integers of 1e-10 cents (so USD has at most 12 decimals) and render as the API's
decimal strings in cents. Each (seed, org, UTC day) has a deterministic set of *leaves*: cost
rows unique by (workspace, catalogue line), each charged at one hour of the day; about one day
in ten has no spend. Pure functions and small value types; no HTTP.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

UNITS_PER_CENT = 10**10
EMPTY_DAY_RATE = 0.1
_CREATED = "2025-01-06T09:00:00Z"
_WIDE = Context(prec=80)


@dataclass(frozen=True)
class Line:
    """One kind of charge: the dimensions the API reports and its price per unit."""

    cost_type: str
    model: str | None
    token_type: str | None
    service_tier: str | None
    context_window: str | None
    description: str
    cents_per_unit: str  # exact, in cents
    max_units: int


def _model_lines(
    model: str, title: str, usd_per_mtok: tuple[str, str, str, str, str]
) -> list[Line]:
    """A model's token lines (standard and batch tier) from its USD prices per million tokens:
    input, output, cache read, cache write 5m, cache write 1h."""
    kinds = (
        ("uncached_input_tokens", "Input Tokens"),
        ("output_tokens", "Output Tokens"),
        ("cache_read_input_tokens", "Cache Read"),
        ("cache_creation.ephemeral_5m_input_tokens", "Cache Write (5m)"),
        ("cache_creation.ephemeral_1h_input_tokens", "Cache Write (1h)"),
    )
    lines = []
    for (token_type, label), usd in zip(kinds, usd_per_mtok, strict=True):
        cents = Decimal(usd) / 10_000  # USD per million tokens -> cents per token
        lines.append(
            Line("tokens", model, token_type, "standard", "0-200k",
                 f"{title} Usage - {label}", str(cents), 3_000_000)
        )  # fmt: skip
        if token_type in ("uncached_input_tokens", "output_tokens"):
            lines.append(
                Line("tokens", model, token_type, "batch", "0-200k",
                     f"{title} Batch Usage - {label}", str(cents / 2), 8_000_000)
            )  # fmt: skip
    return lines


_SONNET, _OPUS, _HAIKU = (
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-1-20250805",
    "claude-haiku-4-5-20251001",
)
CATALOGUE: tuple[Line, ...] = (
    *_model_lines(_SONNET, "Claude Sonnet 4.5", ("3", "15", "0.3", "3.75", "6")),
    *_model_lines(_OPUS, "Claude Opus 4.1", ("15", "75", "1.5", "18.75", "30")),
    *_model_lines(_HAIKU, "Claude Haiku 4.5", ("1", "5", "0.1", "1.25", "2")),
    Line("tokens", _SONNET, "uncached_input_tokens", "standard", "200k-1M",
         "Claude Sonnet 4.5 Usage - Input Tokens, Long Context", "0.0006", 2_000_000),
    Line("tokens", _SONNET, "output_tokens", "standard", "200k-1M",
         "Claude Sonnet 4.5 Usage - Output Tokens, Long Context", "0.00225", 400_000),
    Line("web_search", None, None, None, None, "Web Search Usage", "1", 2_000),
    Line("code_execution", None, None, None, None, "Code Execution Usage", "0.0015", 90_000),
)  # fmt: skip
_PRICE_UNITS = tuple(int(Decimal(line.cents_per_unit) * UNITS_PER_CENT) for line in CATALOGUE)
assert all(
    Decimal(p) == Decimal(line.cents_per_unit) * UNITS_PER_CENT
    for p, line in zip(_PRICE_UNITS, CATALOGUE, strict=True)
), "a price has more decimals than the emulator's unit"

_WORKSPACE_NAMES = ("Claude Code", "Support Agents", "Research", "Batch Summaries", "Evals")
_ARCHIVED_WORKSPACE = 2  # archived since: its past spend still names it
_KEY_STATUSES = ("active", "active", "inactive", "active", "archived", "expired")


def cents_text(units: int) -> str:
    """The API's amount: ``units`` * 1e-10 cents as a decimal string ("123.45", "7")."""
    sign, units = ("-", -units) if units < 0 else ("", units)
    whole, fraction = divmod(units, UNITS_PER_CENT)
    decimals = f"{fraction:010d}".rstrip("0")
    return f"{sign}{whole}.{decimals}" if decimals else f"{sign}{whole}"


def units_to_usd(units: int) -> Decimal:
    """Exact USD of ``units`` (1e-10 cents)."""
    return Decimal(units).scaleb(-12)


def _ident(prefix: str, seed_text: str, length: int) -> str:
    digest = hashlib.sha256(seed_text.encode()).hexdigest()
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(
        alphabet[int(digest[2 * i : 2 * i + 2], 16) % 62] for i in range(length)
    )


@dataclass(frozen=True)
class Org:
    """An organization's workspaces (index 0 is the default workspace: id None) and API keys
    (two per workspace: (id, workspace index))."""

    workspaces: tuple[str | None, ...]
    keys: tuple[tuple[str, int], ...]

    @classmethod
    def build(cls, seed: int, org: str, workspaces: int = 4) -> Org:
        ids = (None, *(_ident("wrkspc_", f"{seed}|{org}|w{i}", 24) for i in range(1, workspaces)))
        keys = tuple(
            (_ident("apikey_", f"{seed}|{org}|k{w}.{j}", 24), w)
            for w in range(workspaces)
            for j in range(2)
        )
        return cls(ids, keys)

    def workspace_items(self, include_archived: bool) -> list[dict[str, Any]]:
        """The workspaces as the workspaces endpoint lists them (not the default one)."""
        items = []
        for w, workspace_id in enumerate(self.workspaces[1:], start=1):
            archived = w == _ARCHIVED_WORKSPACE
            if archived and not include_archived:
                continue
            name = _WORKSPACE_NAMES[(w - 1) % len(_WORKSPACE_NAMES)]
            items.append(
                {"type": "workspace", "id": workspace_id, "name": name, "created_at": _CREATED,
                 "archived_at": "2026-02-01T12:00:00Z" if archived else None,
                 "display_color": "#6C5BB9"}
            )  # fmt: skip
        return items

    def key_items(self) -> list[dict[str, Any]]:
        """The API keys as the api_keys endpoint lists them: a partial hint, never a key."""
        items = []
        for n, (key_id, w) in enumerate(self.keys):
            tail = hashlib.sha256(key_id.encode()).hexdigest()
            workspace = _WORKSPACE_NAMES[(w - 1) % len(_WORKSPACE_NAMES)] if w else "Default"
            items.append(
                {"type": "api_key", "id": key_id, "name": f"{workspace} key {n % 2 + 1}",
                 "workspace_id": self.workspaces[w], "created_at": _CREATED,
                 "created_by": {"id": f"user_{tail[:24]}", "type": "user"},
                 "partial_key_hint": f"sk-ant-api03-{tail[:3]}...{tail[-4:]}",
                 "status": _KEY_STATUSES[n % len(_KEY_STATUSES)]}
            )  # fmt: skip
        return items


@dataclass
class Leaf:
    workspace: int  # index into Org.workspaces
    line: int  # index into CATALOGUE
    hour: int
    units: int


def generate_day(seed: int, org: str, day: date, workspaces: int, count: int) -> list[Leaf]:
    """The deterministic leaves of (seed, org, day): ``count`` distinct (workspace, line)
    combinations, or none (about one day in ten)."""
    rng = random.Random(f"anthropic|{seed}|{org}|{day.isoformat()}")
    if count <= 0 or rng.random() < EMPTY_DAY_RATE:
        return []
    combos = rng.sample(range(workspaces * len(CATALOGUE)), min(count, workspaces * len(CATALOGUE)))
    leaves = []
    for combo in combos:
        w, line = divmod(combo, len(CATALOGUE))
        quantity = max(1, int(CATALOGUE[line].max_units ** rng.random()))  # log-uniform
        leaves.append(Leaf(w, line, rng.randrange(24), quantity * _PRICE_UNITS[line]))
    return leaves


def scale(units: int, factor: Decimal) -> int:
    """``units * factor`` rounded half-even to a whole unit (a restated day)."""
    return int(_WIDE.multiply(Decimal(units), factor).to_integral_value(ROUND_HALF_EVEN))


def result(
    org: Org, leaf_key: tuple[int, int], units: int, by_workspace: bool, by_description: bool
) -> dict[str, Any]:
    """One result object; ``leaf_key`` is (workspace, line), -1 where not grouped."""
    w, line_index = leaf_key
    line = CATALOGUE[line_index] if by_description else None
    return {
        "amount": cents_text(units),
        "context_window": line.context_window if line else None,
        "cost_type": line.cost_type if line else None,
        "currency": "USD",
        "description": line.description if line else None,
        "model": line.model if line else None,
        "service_tier": line.service_tier if line else None,
        "token_type": line.token_type if line else None,
        "workspace_id": org.workspaces[w] if by_workspace else None,
    }
