"""Line-item parsing: the reference's examples, issue 13's drifting spellings, and edge cases."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.providers.openai.line_items import (
    KNOWN_CHARGES,
    TOKEN_TYPES,
    LineItem,
    parse_line_item,
    refine_with_unit,
)
from grafient_pipeline.warehouse import run_models

ROLLUP_SQL = Path(__file__).parents[1] / "dbt_like_sql" / "rollup_model_daily.sql"
DUCKDB = duckdb.connect()

# (text, model, token_type, service_tier, modality, long_context)
CASES = [
    ("gpt-4o-2024-08-06, input", "gpt-4o-2024-08-06", "input", "default", None, False),
    ("gpt-4o-mini-2024-07-18, input", "gpt-4o-mini-2024-07-18", "input", "default", None, False),
    (
        "gpt-5.4-mini-2026-03-17, cached input",
        "gpt-5.4-mini-2026-03-17",
        "cached_input",
        "default",
        None,
        False,
    ),
    ("gpt-5.4-2026-03-05, output", "gpt-5.4-2026-03-05", "output", "default", None, False),
    ("gpt-5.6-sol, input", "gpt-5.6-sol", "input", "default", None, False),
    ("o1-pro, output", "o1-pro", "output", "default", None, False),
    ("text-embedding-3-small, input", "text-embedding-3-small", "input", "default", None, False),
    (
        "gpt-audio-mini-2025-12-15 audio, input",
        "gpt-audio-mini-2025-12-15",
        "input",
        "default",
        "audio",
        False,
    ),
    (
        "gpt-audio-mini-2025-12-15 text, output",
        "gpt-audio-mini-2025-12-15",
        "output",
        "default",
        "text",
        False,
    ),
    (
        "priority | gpt-5.6-sol, output, long context",
        "gpt-5.6-sol",
        "output",
        "priority",
        None,
        True,
    ),
    ("gpt-5.6-sol, input, long context", "gpt-5.6-sol", "input", "default", None, True),
    ("priority | o1-pro, input", "o1-pro", "input", "priority", None, False),
    (
        "gpt-5.4-2026-03-05, cache writes",
        "gpt-5.4-2026-03-05",
        "cache_write",
        "default",
        None,
        False,
    ),
    ("ft-gpt-4o-2024-08-06, input", "ft-gpt-4o-2024-08-06", "input", "default", None, False),
    (
        "gpt-image-2.5-flare image, output",
        "gpt-image-2.5-flare",
        "output",
        "default",
        "image",
        False,
    ),
    # a media word alone names the model and modality; billed per unit, so not a token kind
    ("whisper-1, audio", "whisper-1", "other", "default", "audio", False),
    # the spellings (issue 13, "Line items: the vocabulary drifts")
    ("batch | gpt-4o, output", "gpt-4o", "output", "batch", None, False),
    ("flex | o3, input", "o3", "input", "flex", None, False),
    ("scale | gpt-4o, input", "gpt-4o", "input", "scale", None, False),
    ("gpt-image-1, image output", "gpt-image-1", "output", "default", "image", False),
    ("sora-2, video", "sora-2", "other", "default", "video", False),
    ("gpt-4.1, Input", "gpt-4.1", "input", "default", None, False),
    ("gpt-4o, input_tokens", "gpt-4o", "input", "default", None, False),
    ("turbo | gpt-4o, input", "gpt-4o", "input", "turbo", None, False),
    # both token-word styles, and words in any case
    ("gpt-4o, cached_input_tokens", "gpt-4o", "cached_input", "default", None, False),
    ("gpt-4o, output_tokens", "gpt-4o", "output", "default", None, False),
    ("gpt-4o, cache_write_tokens", "gpt-4o", "cache_write", "default", None, False),
    ("claude-x, cache_creation_input_tokens", "claude-x", "cache_write", "default", None, False),
    ("gpt-4o, cache write", "gpt-4o", "cache_write", "default", None, False),
    ("gpt-4o, Cached Input", "gpt-4o", "cached_input", "default", None, False),
    ("gpt-4o, OUTPUT, Long Context", "gpt-4o", "output", "default", None, True),
    ("gpt-4o, Input", "gpt-4o", "input", "default", None, False),
    ("gpt-4o, input_audio_tokens", "gpt-4o", "input", "default", "audio", False),
    ("BATCH | gpt-4o-mini audio, output", "gpt-4o-mini", "output", "batch", "audio", False),
    ("Priority | gpt-4o, input", "gpt-4o", "input", "priority", None, False),
    ("gpt-4o AUDIO, input", "gpt-4o", "input", "default", "audio", False),
    # fine-tuned ids keep their full (case-sensitive) id
    (
        "ft:gpt-4o-mini-2024-07-18:acme::abc123, input",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",
        "input",
        "default",
        None,
        False,
    ),
    (
        "batch | ft:gpt-4o-mini-2024-07-18:Acme:Suffix:AbC123, cached input",
        "ft:gpt-4o-mini-2024-07-18:Acme:Suffix:AbC123",
        "cached_input",
        "batch",
        None,
        False,
    ),
    # a modality-looking word that is the whole model name stays the model
    ("text, input", "text", "input", "default", None, False),
]

# (text, charge, recognized): charges without a model, grouped by one name whatever the case
NON_TOKEN_CASES = [
    ("web search tool calls", "web search tool calls", True),
    ("Web search tool calls", "web search tool calls", True),
    ("  WEB  search\ttool calls ", "web search tool calls", True),
    ("File search tool calls", "file search tool calls", True),
    ("Code interpreter sessions", "code interpreter sessions", True),
    ("Vector storage", "vector storage", True),
    ("Vector store storage", "vector store storage", True),
    ("Image models", "image models", True),
    ("Text tokens", "text tokens", True),
    # unknown text: kept, named alike, but not recognized
    ("Quantum widgets", "quantum widgets", False),
    ("gpt-4o, thinking", "gpt-4o, thinking", False),
    ("gpt-4o, input, short context", "gpt-4o, input, short context", False),
    ("two words | gpt-4o, input", "two words | gpt-4o, input", False),
    ("priority | batch | gpt-4o, input", "priority | batch | gpt-4o, input", False),
    ("a, b, input", "a, b, input", False),
    ("gpt-4o, input\n", "gpt-4o, input", False),
    ("gpt-4o,  input", "gpt-4o, input", False),
    ("", None, False),
    (" \t ", None, False),
]


@pytest.mark.parametrize(("text", "model", "token_type", "tier", "modality", "long_context"), CASES)
def test_parse_line_item(
    text: str,
    model: str | None,
    token_type: str,
    tier: str,
    modality: str | None,
    long_context: bool,
) -> None:
    assert parse_line_item(text) == LineItem(
        text=text,
        model=model,
        token_type=token_type,
        service_tier=tier,
        modality=modality,
        long_context=long_context,
        recognized=True,
        charge=None,
    )


@pytest.mark.parametrize(("text", "charge", "recognized"), NON_TOKEN_CASES)
def test_non_token_charge(text: str, charge: str | None, recognized: bool) -> None:
    assert parse_line_item(text) == LineItem(
        text=text,
        model=None,
        token_type="other",
        service_tier="default",
        modality=None,
        long_context=False,
        recognized=recognized,
        charge=charge,
    )


def test_known_charges_are_their_own_grouping_name() -> None:
    for name in KNOWN_CHARGES:
        assert parse_line_item(name).charge == name
        assert parse_line_item(name.upper()).charge == name


def test_web_search_spellings_group_under_one_name() -> None:
    assert parse_line_item("Web search tool calls").charge == "web search tool calls"
    assert parse_line_item("web search tool calls").charge == "web search tool calls"


def test_none_is_other() -> None:
    item = parse_line_item(None)
    assert item.text is None
    assert item.model is None
    assert item.token_type == "other"
    assert item.service_tier == "default"
    assert item.recognized is False
    assert item.charge is None


def test_token_types_constant() -> None:
    assert TOKEN_TYPES == ("input", "output", "cached_input", "cache_write", "other")
    texts = [case[0] for case in CASES] + [case[0] for case in NON_TOKEN_CASES]
    assert {parse_line_item(text).token_type for text in texts} <= set(TOKEN_TYPES)


@pytest.mark.parametrize(
    ("text", "unit", "modality", "recognized"),
    [
        ("gpt-image-1, output", "images", "image", True),
        ("tts-1, input", "characters", "text", True),
        ("gpt-4o audio, input", "images", "audio", True),  # the text's modality wins
        ("gpt-4o, input", "tokens", None, True),
        ("Quantum widgets", "gibibyte_hours", None, True),
        ("Quantum widgets", "Duration_Seconds", None, True),
        ("Quantum widgets", "tokens", None, False),
        ("Quantum widgets", "1000_tokens", None, False),
        ("Quantum widgets", None, None, False),
        ("Quantum widgets", "furlongs", None, False),
    ],
)
def test_refine_with_unit(
    text: str, unit: str | None, modality: str | None, recognized: bool
) -> None:
    item = refine_with_unit(parse_line_item(text), unit)
    assert (item.modality, item.recognized) == (modality, recognized)
    assert (item.text, item.model, item.token_type, item.charge) == (
        text,
        parse_line_item(text).model,
        parse_line_item(text).token_type,
        parse_line_item(text).charge,
    )


def test_refine_with_unit_leaves_none_text_unrecognized() -> None:
    assert refine_with_unit(parse_line_item(None), "gibibyte_hours").recognized is False


@settings(derandomize=True)
@given(st.one_of(st.none(), st.text()))
def test_never_raises_and_keeps_text(text: str | None) -> None:
    item = parse_line_item(text)
    assert item.text == text
    assert item.token_type in TOKEN_TYPES
    assert item.service_tier == item.service_tier.lower()
    assert item.service_tier and "|" not in item.service_tier
    assert item.modality in (None, "audio", "text", "image", "video")
    # a token kind always comes with its model; a charge without a model has a grouping name
    if item.token_type != "other":
        assert item.model is not None
        assert item.recognized
    assert (item.model is None) or (item.charge is None)
    if item.model is None and text is not None and text.strip(" \t\n\r\f\v"):
        assert item.charge is not None
    assert refine_with_unit(item, "images").text == text


WORDS = st.sampled_from(
    [
        "gpt-4o",
        "ft:o3:acme::x1",
        "priority",
        "batch",
        "turbo",
        "input",
        "Output",
        "cached input",
        "cache writes",
        "input_tokens",
        "image output",
        "video",
        "audio",
        "text",
        "long context",
        "Web search tool calls",
        " ",
        ",",
        ", ",
        " | ",
        "|",
        "\n",
        "\t",
    ]
)


@settings(derandomize=True, max_examples=300)
@given(st.lists(WORDS, max_size=8).map("".join))
def test_never_raises_on_near_misses(text: str) -> None:
    item = parse_line_item(text)
    assert item.text == text
    assert item.token_type in TOKEN_TYPES
    if item.model is not None:
        assert "|" not in item.model and "," not in item.model
        assert item.model == item.model.strip()


def _rollup_grouping_expression() -> str:
    """The expression rollup_model_daily.sql names a model-less charge by (its nullif line)."""
    (line,) = [line for line in ROLLUP_SQL.read_text().splitlines() if "nullif(" in line]
    return line.strip().removesuffix(",")


@settings(derandomize=True, max_examples=200)
@given(st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=30))
def test_charge_matches_the_rollup_sql(text: str) -> None:
    """For ASCII text, LineItem.charge and the rollup's grouping name a charge alike."""
    item = parse_line_item(text)
    if item.model is not None:
        return  # the rollup uses the model itself
    query = f"SELECT {_rollup_grouping_expression()} FROM (SELECT $text AS line_item)"
    assert DUCKDB.execute(query, {"text": text}).fetchone() == (item.charge,)


def test_rollup_shows_one_row_per_charge_whatever_its_case() -> None:
    conn = duckdb.connect()
    ensure_schema(conn)
    rows = [
        ("Web search tool calls", "1.25"),
        ("web search tool calls", "2.50"),
        (" Web  search tool calls", "0.25"),
        ("gpt-4o, input", "3.00"),
        ("gpt-4o, Input", "4.00"),
        ("Quantum widgets", "0.50"),
    ]
    for text, amount in rows:
        item = parse_line_item(text)
        conn.execute(
            "INSERT INTO fct_costs VALUES ('acme', 'openai', NULL, DATE '2026-03-01', NULL, NULL,"
            " ?, ?, ?, ?, ?::DECIMAL(38, 16), 'usd', NULL, NULL, true)",
            [text, item.model, item.token_type, item.service_tier, amount],
        )
    params = {"integration_id": "acme", "start_date": "2026-03-01", "end_date": "2026-03-01"}
    run_models(conn, ["rollup_model_daily"], params)
    got = conn.execute(
        "SELECT model, amount_usd::VARCHAR, input_usd::VARCHAR, other_usd::VARCHAR"
        " FROM rollup_model_daily ORDER BY model"
    ).fetchall()
    assert [(model, Decimal(a), Decimal(i), Decimal(o)) for model, a, i, o in got] == [
        ("gpt-4o", Decimal("7"), Decimal("7"), Decimal("0")),
        ("quantum widgets", Decimal("0.5"), Decimal("0"), Decimal("0.5")),
        ("web search tool calls", Decimal("4"), Decimal("0"), Decimal("4")),
    ]
