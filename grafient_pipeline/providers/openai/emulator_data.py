"""The data side of the Costs API emulator: catalogue, amounts, days and JSON fragments.

Holds the line-item catalogue and prices, exact amount text (integers of 1e-16 USD), the
deterministic generation of an org's leaves per UTC day, and the rendering of results into JSON
byte fragments. Pure functions and small value types; no HTTP, no requests, no locking. See
:mod:`grafient_pipeline.providers.openai.emulator` for the data rules.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
from array import array
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

SCALE = 10**16  # amounts are integers of 1e-16 USD
EMPTY_DAY_RATE = 0.1
_QBITS = 12  # quantity table size 4096 per unit


# --------------------------------------------------------------------------- catalogue

_UNITS: dict[str | None, tuple[int, int, int]] = {  # unit -> (low, high, scale of the quantity)
    "tokens": (1, 20_000_000, 1),
    "1000_tokens": (1, 40_000, 1),
    "images": (1, 800, 1),
    "duration_seconds": (1, 200_000, 1),
    "duration_minutes": (1, 4_000, 1),
    "duration_hours": (1, 300, 1),
    "characters": (20, 3_000_000, 1),
    "gibibyte_hours": (1, 400_000, 10),  # tenths: quantity like 1234.5
    None: (1, 20_000, 1),  # tool calls: a count with quantity_unit null
}

_CATALOGUE: tuple[tuple[str, str | None, str], ...] = (  # line_item, quantity_unit, USD per unit
    ("gpt-4o-mini-2024-07-18, input", "tokens", "0.00000015"),
    ("gpt-4o-mini-2024-07-18, output", "tokens", "0.0000006"),
    ("gpt-4o-mini-2024-07-18, cached input", "tokens", "0.000000075"),
    ("gpt-4o-2024-08-06, input", "tokens", "0.0000025"),
    ("gpt-4o-2024-08-06, output", "tokens", "0.00001"),
    ("gpt-4o-2024-08-06, cached input", "tokens", "0.00000125"),
    ("gpt-4o, input_tokens", "tokens", "0.0000025"),
    ("ft-gpt-4o-2024-08-06, input", "tokens", "0.00000375"),
    ("ft-gpt-4o-2024-08-06, output", "tokens", "0.000015"),
    ("gpt-5.4-2026-03-05, input", "tokens", "0.00000125"),
    ("gpt-5.4-2026-03-05, output", "tokens", "0.00001"),
    ("gpt-5.4-2026-03-05, cached input", "tokens", "0.000000125"),
    ("gpt-5.4-2026-03-05, cache writes", "tokens", "0.0000015625"),
    ("gpt-5.4-mini-2026-03-17, input", "tokens", "0.00000025"),
    ("gpt-5.4-mini-2026-03-17, output", "tokens", "0.000002"),
    ("gpt-5.4-mini-2026-03-17, cached input", "tokens", "0.000000025"),
    ("gpt-5.6-sol, input", "tokens", "0.0000015"),
    ("gpt-5.6-sol, output", "tokens", "0.000012"),
    ("gpt-5.6-sol, cached input", "tokens", "0.00000015"),
    ("gpt-5.6-sol, cache writes", "tokens", "0.000001875"),
    ("gpt-5.6-sol, input, long context", "tokens", "0.000003"),
    ("gpt-5.6-sol, output, long context", "tokens", "0.000018"),
    ("priority | gpt-5.6-sol, input", "tokens", "0.0000026666666667"),
    ("priority | gpt-5.6-sol, output", "tokens", "0.0000213333333333"),
    ("priority | gpt-5.6-sol, output, long context", "tokens", "0.0000426666666667"),
    ("o1-pro, input", "tokens", "0.00015"),
    ("o1-pro, output", "tokens", "0.0006"),
    ("text-embedding-3-small, input", "tokens", "0.00000002"),
    ("text-embedding-3-large, input", "1000_tokens", "0.00013"),
    ("gpt-audio-mini-2025-12-15 audio, input", "tokens", "0.00001"),
    ("gpt-audio-mini-2025-12-15 audio, output", "tokens", "0.00002"),
    ("gpt-audio-mini-2025-12-15 text, input", "tokens", "0.0000006"),
    ("gpt-audio-mini-2025-12-15 text, output", "tokens", "0.0000024"),
    ("gpt-image-2.5-flare image, output", "images", "0.04"),
    ("gpt-image-2.5-flare text, input", "tokens", "0.000005"),
    ("whisper-1, audio", "duration_seconds", "0.0001"),
    ("gpt-4o-mini-transcribe, audio", "duration_minutes", "0.003"),
    ("tts-1-hd, characters", "characters", "0.00003"),
    ("web search tool calls", None, "0.01"),
    ("Web search tool calls", None, "0.025"),
    ("Vector storage", "gibibyte_hours", "0.000138888888889"),
    ("Code interpreter sessions", "duration_hours", "0.03"),
)
LINE_ITEMS: tuple[str, ...] = tuple(c[0] for c in _CATALOGUE)
_L = len(_CATALOGUE)


def _quantity_table(unit: str | None) -> tuple[int, ...]:
    low, high, _ = _UNITS[unit]
    n = 1 << _QBITS
    return tuple(max(low, round(low * (high / low) ** (i / (n - 1)))) for i in range(n))


def _price_units(usd: str, unit: str | None) -> int:
    scaled = Decimal(usd) * SCALE / _UNITS[unit][2]
    if scaled != scaled.to_integral_value():
        raise ValueError(f"price {usd} has too many decimals")
    return int(scaled)


_QTABLES = {u: _quantity_table(u) for u in _UNITS}
_LI_QTABLE = tuple(_QTABLES[c[1]] for c in _CATALOGUE)
_LI_PRICE = tuple(_price_units(c[2], c[1]) for c in _CATALOGUE)
_LI_QSCALE = tuple(_UNITS[c[1]][2] for c in _CATALOGUE)
_LI_JSON = tuple(json.dumps(c[0]) for c in _CATALOGUE)
_LI_UNIT_JSON = tuple(json.dumps(c[1]) for c in _CATALOGUE)


def _split_bkey(bkey: int) -> tuple[int, int, bool]:
    """A leaf's packed key -> (line item index, quantity index, padded-amount flag)."""
    return bkey >> 13, (bkey >> 1) & ((1 << _QBITS) - 1), bool(bkey & 1)


def base_units(bkey: int) -> int:
    li, qi, _ = _split_bkey(bkey)
    return _LI_QTABLE[li][qi] * _LI_PRICE[li]


def _qty_text(li: int, scaled: int) -> str:
    if _LI_QSCALE[li] == 1:
        return str(scaled)
    whole, tenth = divmod(scaled, 10)
    return f"{whole}.{tenth}"


def amount_text(units: int, padded: bool = False) -> str:
    """JSON number text for ``units`` * 1e-16 USD, never through float.

    Below 1e-4 it uses exponent notation (``1.29e-05``); otherwise either all 16 decimals
    (``0.8958740000000000``, when ``padded``) or trailing zeros trimmed (``0.4105``, ``2.0``).
    """
    if units < 0:
        return "-" + amount_text(-units, padded)
    if units == 0:
        return "0.0"
    whole, frac = divmod(units, SCALE)
    if whole == 0 and frac < 10**12:
        digits = str(units)
        mantissa = digits.rstrip("0")
        mantissa = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
        return f"{mantissa}e-{17 - len(digits):02d}"
    if padded:
        return f"{whole}.{frac:016d}"
    return f"{whole}.{f'{frac:016d}'.rstrip('0') or '0'}"


def units_to_decimal(units: int) -> Decimal:
    return Decimal(amount_text(units))


def scale_units(units: int, factor: Decimal) -> int:
    """``units * factor`` rounded half-even to a whole 1e-16, in exact integer arithmetic."""
    num, den = factor.as_integer_ratio()
    q, r = divmod(units * num, den)
    if 2 * r > den or (2 * r == den and q % 2):
        q += 1
    return q


# --------------------------------------------------------------------------- data


def _ident(prefix: str, seed_text: str, length: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    rng = random.Random(seed_text)
    return prefix + "".join(rng.choice(alphabet) for _ in range(length))


@dataclass(frozen=True)
class Universe:
    """An org's projects and API keys; combo ``c`` is (line item ``c % L``, key ``c // L``)."""

    projects: tuple[str, ...]
    keys: tuple[str, ...]  # key index -> id; its project is index // per_project
    per_project: int

    @classmethod
    def build(cls, seed: int, org: str, results_per_day: int) -> Universe:
        n_proj = 3
        while _L * n_proj * n_proj < results_per_day:
            n_proj += 1
        per = n_proj
        projects = tuple(_ident("proj_", f"{seed}|{org}|p{i}", 24) for i in range(n_proj))
        keys = tuple(_ident("key_", f"{seed}|{org}|k{i}", 16) for i in range(n_proj * per))
        return cls(projects, keys, per)

    @property
    def combos(self) -> int:
        return _L * len(self.keys)


@dataclass
class Day:
    """The leaves of one (org, day), as parallel arrays."""

    keys: array  # api key index per leaf
    bkeys: array  # packed (line item, quantity index, padded flag) per leaf
    hours: bytes
    units: list[int] | None = None  # set once the day has been restated

    def leaf_units(self) -> list[int]:
        return self.units if self.units is not None else [base_units(b) for b in self.bkeys]


def _coprime(rng: random.Random, n: int) -> int:
    while True:
        a = rng.randrange(1, max(2, n))
        if math.gcd(a, n) == 1:
            return a


def generate_day(seed: int, org: str, day: date, uni: Universe, n: int) -> Day:
    """The deterministic leaves of (seed, org, day): n unique combos, or none (~10% of days)."""
    rng = random.Random(f"{seed}|{org}|{day.isoformat()}")
    if n <= 0 or rng.random() < EMPTY_DAY_RATE:
        return Day(array("i"), array("i"), b"")
    total = uni.combos
    a, b = _coprime(rng, total), rng.randrange(total)
    combos = [(a * i + b) % total for i in range(n)]
    bits = array("I", rng.randbytes(4 * n))
    if sys.byteorder == "big":
        bits.byteswap()
    qmask = ((1 << _QBITS) - 1) << 1
    bkeys = array(
        "i",
        [
            ((c % _L) << 13) | ((x >> 2) & qmask) | ((x & 3) == 0)
            for c, x in zip(combos, bits, strict=True)
        ],
    )
    hours = bytes([(x >> 16) % 24 for x in bits])
    return Day(array("i", [c // _L for c in combos]), bkeys, hours)


def leaf_row(uni: Universe, k: int, bkey: int, units: int, hour: int) -> dict[str, Any]:
    li, qi, padded = _split_bkey(bkey)
    qty = _LI_QTABLE[li][qi]
    return {
        "line_item": LINE_ITEMS[li],
        "project_id": uni.projects[k // uni.per_project],
        "api_key_id": uni.keys[k],
        "amount": Decimal(amount_text(units, padded)),
        "currency": "usd",
        "quantity": qty if _LI_QSCALE[li] == 1 else Decimal(_qty_text(li, qty)),
        "quantity_unit": _CATALOGUE[li][1],
        "hour": hour,
    }


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Shape:
    """How results look: grouped dimensions plus the shape quirks of :class:`Faults`."""

    g_line_item: bool
    g_project: bool
    g_key: bool
    strings: bool
    extra: bool
    legacy: bool

    @property
    def per_leaf(self) -> bool:
        return self.g_line_item and self.g_project and self.g_key


def j(value: str | None) -> str:
    return "null" if value is None else json.dumps(value)


def result_head(shape: Shape, org: str, project: str | None, key: str | None) -> str:
    head = '{"object":"organization.costs.result"'
    if shape.extra:
        head += f',"organization_id":{j(org)}'
    head += f',"project_id":{j(project)}'
    if not shape.legacy:
        head += f',"api_key_id":{j(key)}'
    return head


def _result_body(shape: Shape, amount: str, li: int | None, qty: int | None) -> str:
    value = f'"{amount}"' if shape.strings else amount
    body = f',"amount":{{"value":{value},"currency":"usd"}}'
    body += f',"line_item":{"null" if li is None else _LI_JSON[li]}'
    if not shape.legacy:
        qty_json = "null" if li is None or qty is None else _qty_text(li, qty)
        unit_json = "null" if li is None else _LI_UNIT_JSON[li]
        body += f',"quantity":{qty_json},"quantity_unit":{unit_json}'
    if shape.extra:
        body += ',"organization_name":"Emulated organization"'
    return body + "}"


class LeafBodies(dict[int, bytes]):
    """Cache: packed leaf key -> rendered tail of the result (ending with a comma)."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape

    def __missing__(self, bkey: int) -> bytes:
        li, qi, padded = _split_bkey(bkey)
        qty = _LI_QTABLE[li][qi]
        text = _result_body(self.shape, amount_text(qty * _LI_PRICE[li], padded), li, qty)
        self[bkey] = encoded = (text + ",").encode()
        return encoded


def leaf_fragment(keys: array, bkeys: array, heads: list[bytes], bodies: LeafBodies) -> bytes:
    """Results of one bucket when every leaf is its own result: mostly list and bytes joins."""
    if not keys:
        return b""
    parts: list[bytes] = [b""] * (2 * len(keys))
    parts[0::2] = map(heads.__getitem__, keys)
    parts[1::2] = map(bodies.__getitem__, bkeys)
    parts[-1] = parts[-1][:-1]
    return b"".join(parts)


def grouped_fragment(
    shape: Shape, org: str, uni: Universe, keys: array, bkeys: array, units: list[int]
) -> bytes:
    """Results of one bucket aggregated by the grouped dimensions (exact integer sums)."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for k, bk, u in zip(keys, bkeys, units, strict=True):
        li, qi, padded = _split_bkey(bk)
        gkey = (
            li if shape.g_line_item else -1,
            k // uni.per_project if shape.g_project else -1,
            k if shape.g_key else -1,
        )
        acc = groups.get(gkey)
        if acc is None:
            groups[gkey] = [u, _LI_QTABLE[li][qi], int(padded)]
        else:
            acc[0] += u
            acc[1] += _LI_QTABLE[li][qi]
    out = []
    for (li, p, k), (u, qty, padded) in groups.items():
        head = result_head(
            shape, org, uni.projects[p] if p >= 0 else None, uni.keys[k] if k >= 0 else None
        )
        body = _result_body(shape, amount_text(u, bool(padded)), li if li >= 0 else None, qty)
        out.append(head + body)
    return ",".join(out).encode()


# --------------------------------------------------------------------------- names

PROJECTS_PATH = "/v1/organization/projects"
_PROJECT_NAMES = (
    "Checkout Assistant",
    "Support Bot",
    "Research Sandbox",
    "Search Ranking",
    "Internal Tools",
    "Marketing Copy",
    "Data Labeling",
    "Voice Agent",
)
_KEY_SUFFIXES = ("prod", "staging", "ci", "batch", "dev", "eval")
_ARCHIVED_PROJECT = 2  # this project index is archived (its past spend still names it)
_CREATED = 1_704_067_200  # 2024-01-01T00:00:00Z


def names_route(path: str) -> tuple[str, str | None] | None:
    """("projects", None) or ("api_keys", project id) for the names endpoints; else None."""
    if path == PROJECTS_PATH:
        return "projects", None
    rest = path.removeprefix(PROJECTS_PATH + "/")
    project_id, sep, tail = rest.partition("/")
    if rest != path and sep and tail == "api_keys" and project_id:
        return "api_keys", project_id
    return None


def project_name(index: int) -> str:
    base = _PROJECT_NAMES[index % len(_PROJECT_NAMES)]
    return base if index < len(_PROJECT_NAMES) else f"{base} {index // len(_PROJECT_NAMES) + 1}"


def project_items(uni: Universe, include_archived: bool) -> list[dict[str, Any]]:
    """The organization's projects as the projects endpoint lists them (ids of the cost data)."""
    items = []
    for i, project_id in enumerate(uni.projects):
        archived = i == _ARCHIVED_PROJECT
        if archived and not include_archived:
            continue
        items.append(
            {
                "id": project_id,
                "object": "organization.project",
                "name": project_name(i),
                "created_at": _CREATED + i * 86_400,
                "archived_at": _CREATED + 400 * 86_400 if archived else None,
                "status": "archived" if archived else "active",
            }
        )
    return items


def api_key_items(uni: Universe, project_id: str) -> list[dict[str, Any]] | None:
    """A project's API keys as its api_keys endpoint lists them; None for an unknown project."""
    if project_id not in uni.projects:
        return None
    p = uni.projects.index(project_id)
    slug = project_name(p).lower().replace(" ", "-")
    items = []
    for j in range(uni.per_project):
        key_id = uni.keys[p * uni.per_project + j]
        tail = hashlib.sha256(key_id.encode()).hexdigest()
        if j % 2 == 0:
            owner = {
                "type": "user",
                "user": {"id": f"user_{tail[:12]}", "name": f"Owner {p + 1}.{j + 1}"},
            }
        else:
            owner = {
                "type": "service_account",
                "service_account": {"id": f"svc_acct_{tail[:12]}", "name": f"{slug}-bot"},
            }
        items.append(
            {
                "object": "organization.project.api_key",
                "id": key_id,
                "name": f"{slug}-{_KEY_SUFFIXES[j % len(_KEY_SUFFIXES)]}",
                "redacted_value": f"sk-proj-{tail[:2]}****{tail[-4:]}",
                "created_at": _CREATED + (p * uni.per_project + j) * 3_600,
                "last_used_at": None,
                "owner": owner,
            }
        )
    return items
