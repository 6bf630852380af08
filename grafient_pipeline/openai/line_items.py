"""Parse OpenAI Costs API ``line_item`` strings into model, token type, tier and modality.

Line items are opaque, case-sensitive text (see reference/openai-costs-api.md). Token charges look
like ``[priority | ]<model>[ <modality>], <token kind>[, long context]``; anything else is a
non-token charge and keeps its text with ``token_type = "other"``. Parsing never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

TOKEN_TYPES = ("input", "output", "cached_input", "cache_write", "other")

_TOKEN_LINE = re.compile(
    r"(?P<tier>priority \| )?(?P<model>.+?), "
    r"(?P<kind>input|output|cached input|cache writes)(?P<long>, long context)?"
)  # the reference's regex, used with fullmatch (so a trailing newline does not slip through)
_MODALITY = re.compile(r"(?P<model>.+) (?P<modality>audio|text|image)")
_KIND_TO_TOKEN_TYPE = {
    "input": "input",
    "output": "output",
    "cached input": "cached_input",
    "cache writes": "cache_write",
}


@dataclass(frozen=True, slots=True)
class LineItem:
    text: str | None
    model: str | None
    token_type: str
    service_tier: str  # "priority" or "default"
    modality: str | None
    long_context: bool


def _other(text: str | None) -> LineItem:
    return LineItem(
        text=text,
        model=None,
        token_type="other",
        service_tier="default",
        modality=None,
        long_context=False,
    )


@lru_cache(maxsize=4096)
def parse_line_item(text: str | None) -> LineItem:
    """Split a line item into its parts; unrecognised text is a non-token ("other") charge."""
    if not isinstance(text, str):
        return _other(None)
    match = _TOKEN_LINE.fullmatch(text)
    if match is None:
        return _other(text)
    model = match.group("model")
    modality = None
    split = _MODALITY.fullmatch(model)
    if split is not None:
        model, modality = split.group("model"), split.group("modality")
    return LineItem(
        text=text,
        model=model,
        token_type=_KIND_TO_TOKEN_TYPE[match.group("kind")],
        service_tier="priority" if match.group("tier") else "default",
        modality=modality,
        long_context=match.group("long") is not None,
    )
