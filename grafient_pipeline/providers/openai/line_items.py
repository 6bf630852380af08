"""Parse OpenAI Costs API ``line_item`` strings into model, token type, tier and modality.

Line items are free text whose vocabulary drifts (see reference/openai-costs-api.md). Token charges
look like ``[<tier> | ]<model>[ <modality>], [<modality> ]<kind>[, long context]``, read without
regard to case; anything else is a non-token charge and keeps its text with ``token_type =
"other"``. Parsing never raises. Every word the parser knows is one line in a table below.

Decisions:
- ``<tier> |`` is any single word; known or not, it becomes ``service_tier`` (lowercase), never
  part of the model. No prefix means ``"default"``.
- Token kinds come in both styles (``cached input`` and ``cached_input_tokens``); a modality word
  may stand before the comma (``gpt-audio audio, input``) or before the kind (``gpt-image-1, image
  output``). The model keeps its spelling (fine-tuned ids such as ``ft:gpt-4o-mini:acme::abc123``
  are case-sensitive ids), so only the words around it are case-insensitive.
- A media word alone where the kind should be (``sora-2, video``, ``whisper-1, audio``) names the
  model and the modality but is ``token_type = "other"``: such charges are billed per second,
  minute or image rather than per token, and the text does not say input or output. They are
  recognized charges of that model, so the model rollup shows them under it.
- Charges without a model (tool calls, storage, ``Text tokens``...) get ``charge``: their text in
  lowercase with whitespace runs collapsed, the same name ``rollup_model_daily`` groups them
  under, so ``Web search tool calls`` and ``web search tool calls`` are one row.
  ``recognized`` says whether that name is in ``KNOWN_CHARGES``; unknown text is kept (never
  dropped) with ``recognized = False`` so a check can point at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

TOKEN_TYPES = ("input", "output", "cached_input", "cache_write", "other")

# Kind words after the comma, lowercase -> (token_type, modality the word itself carries).
_KINDS: dict[str, tuple[str, str | None]] = {
    "input": ("input", None),
    "output": ("output", None),
    "cached input": ("cached_input", None),
    "cache read": ("cached_input", None),
    "cache reads": ("cached_input", None),
    "cache write": ("cache_write", None),
    "cache writes": ("cache_write", None),
    "input_tokens": ("input", None),
    "output_tokens": ("output", None),
    "cached_input_tokens": ("cached_input", None),
    "input_cached_tokens": ("cached_input", None),
    "cache_read_input_tokens": ("cached_input", None),
    "cache_write_tokens": ("cache_write", None),
    "cache_creation_input_tokens": ("cache_write", None),
    "input_audio_tokens": ("input", "audio"),
    "output_audio_tokens": ("output", "audio"),
    "input_image_tokens": ("input", "image"),
    "output_image_tokens": ("output", "image"),
    "input_text_tokens": ("input", "text"),
    "output_text_tokens": ("output", "text"),
}
# Modality words, before the comma or before a kind word.
_MODALITIES = frozenset({"audio", "text", "image", "video"})
# A media word alone where the kind should be: a per-unit charge of that model (see docstring).
_MEDIA_KINDS: dict[str, str] = {
    "audio": "audio",
    "video": "video",
    "image": "image",
    "images": "image",
}
_LONG_CONTEXT = "long context"
# Non-token charges, as normalized by _charge_name (lowercase, single spaces).
KNOWN_CHARGES = frozenset(
    {
        "web search tool calls",
        "file search tool calls",
        "computer use tool calls",
        "code interpreter sessions",
        "container sessions",
        "vector storage",
        "vector store storage",
        "file search storage",
        "image models",
        "text tokens",
        "audio tokens",
    }
)
# What a quantity_unit says about a charge the text alone did not (see refine_with_unit).
_UNIT_MODALITY = {"images": "image", "characters": "text"}
_NON_TOKEN_UNITS = frozenset(
    {
        "images",
        "characters",
        "duration_seconds",
        "duration_minutes",
        "duration_hours",
        "gibibyte_hours",
    }
)

_TOKEN_LINE = re.compile(
    r"(?:(?P<tier>[a-z][a-z_-]*) \| )?"
    r"(?P<model>[^\s|,](?:[^|,\r\n]*[^\s|,])?), "
    r"(?P<kind>[^,\r\n]+?)"
    r"(?:, (?P<suffix>[^,\r\n]+))?",
    re.IGNORECASE,
)  # used with fullmatch, so a trailing newline does not slip through
_MODEL_MODALITY = re.compile(r"(?P<model>.+) (?P<modality>[a-z]+)", re.IGNORECASE)
# Same characters as the regexp in rollup_model_daily.sql, so both name a charge alike.
_WHITESPACE = re.compile(r"[ \t\n\r\f\v]+")


@dataclass(frozen=True, slots=True)
class LineItem:
    text: str | None
    model: str | None
    token_type: str
    service_tier: str  # lowercase: "default", "priority", "batch", "flex", "scale", ...
    modality: str | None
    long_context: bool
    recognized: bool  # a token charge, a model's media charge or a name in KNOWN_CHARGES
    charge: str | None  # the grouping name of a charge without a model; None when it has one


def _charge_name(text: str) -> str | None:
    return _WHITESPACE.sub(" ", text).strip(" ").lower() or None


def _non_token(text: str | None) -> LineItem:
    charge = None if text is None else _charge_name(text)
    return LineItem(
        text=text,
        model=None,
        token_type="other",
        service_tier="default",
        modality=None,
        long_context=False,
        recognized=charge in KNOWN_CHARGES,
        charge=charge,
    )


def _read_kind(kind: str) -> tuple[str, str | None] | None:
    """(token_type, modality) for the words after the comma, or None if they are unknown."""
    kind = kind.lower()
    if kind in _KINDS:
        return _KINDS[kind]
    if kind in _MEDIA_KINDS:
        return "other", _MEDIA_KINDS[kind]
    modality, _, rest = kind.partition(" ")
    if modality in _MODALITIES and rest in _KINDS and _KINDS[rest][1] is None:
        return _KINDS[rest][0], modality
    return None


def _split_modality(model: str) -> tuple[str, str | None]:
    split = _MODEL_MODALITY.fullmatch(model)
    if split is None or split.group("modality").lower() not in _MODALITIES:
        return model, None
    return split.group("model"), split.group("modality").lower()


@lru_cache(maxsize=4096)
def parse_line_item(text: str | None) -> LineItem:
    """Split a line item into its parts; unrecognised text is a non-token ("other") charge."""
    if not isinstance(text, str):
        return _non_token(None)
    match = _TOKEN_LINE.fullmatch(text)
    if match is None:
        return _non_token(text)
    kind = _read_kind(match.group("kind"))
    suffix = match.group("suffix")
    if kind is None or (suffix is not None and suffix.lower() != _LONG_CONTEXT):
        return _non_token(text)
    token_type, modality = kind
    model = match.group("model")
    if modality is None:
        model, modality = _split_modality(model)
    tier = match.group("tier")
    return LineItem(
        text=text,
        model=model,
        token_type=token_type,
        service_tier=tier.lower() if tier else "default",
        modality=modality,
        long_context=suffix is not None,
        recognized=True,
        charge=None,
    )


def refine_with_unit(item: LineItem, quantity_unit: str | None) -> LineItem:
    """Add what a result's ``quantity_unit`` says that its line item text did not.

    A unit of images or characters names the modality; a non-token unit (time, storage, images,
    characters) on unknown text shows it is a metered non-token charge, not a token line the
    parser failed to read, so it counts as recognized. Token units add nothing.
    """
    if not isinstance(quantity_unit, str):
        return item
    unit = quantity_unit.lower()
    if item.modality is None and unit in _UNIT_MODALITY:
        item = replace(item, modality=_UNIT_MODALITY[unit])
    if not item.recognized and item.text is not None and unit in _NON_TOKEN_UNITS:
        item = replace(item, recognized=True)
    return item
