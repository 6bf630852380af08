"""Line-item parsing: every example from reference/openai-costs-api.md, plus edge cases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grafient_pipeline.openai.line_items import TOKEN_TYPES, LineItem, parse_line_item

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
    # non-token charges: text kept, token_type "other", no model
    ("web search tool calls", None, "other", "default", None, False),
    ("Web search tool calls", None, "other", "default", None, False),
    ("Vector storage", None, "other", "default", None, False),
    ("whisper-1, audio", None, "other", "default", None, False),
    ("gpt-4o, input_tokens", None, "other", "default", None, False),
    # case-sensitive: only the exact lowercase token kinds are token charges
    ("gpt-4o, Input", None, "other", "default", None, False),
    ("Priority | gpt-4o, input", "Priority | gpt-4o", "input", "default", None, False),
    ("gpt-4o, input\n", None, "other", "default", None, False),
    ("", None, "other", "default", None, False),
    # a modality-looking word that is the whole model name stays the model
    ("text, input", "text", "input", "default", None, False),
    ("gpt-4o AUDIO, input", "gpt-4o AUDIO", "input", "default", None, False),
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
    )


def test_none_is_other() -> None:
    item = parse_line_item(None)
    assert item.text is None
    assert item.model is None
    assert item.token_type == "other"
    assert item.service_tier == "default"


def test_token_types_constant() -> None:
    assert TOKEN_TYPES == ("input", "output", "cached_input", "cache_write", "other")
    assert {parse_line_item(case[0]).token_type for case in CASES} <= set(TOKEN_TYPES)


@settings(derandomize=True)
@given(st.one_of(st.none(), st.text()))
def test_never_raises_and_keeps_text(text: str | None) -> None:
    item = parse_line_item(text)
    assert item.text == text
    assert item.token_type in TOKEN_TYPES
    assert item.service_tier in ("priority", "default")
    assert (item.model is None) == (item.token_type == "other")
