"""The one scrubber for text a person sees or the registry stores: key material out, hints in.

A provider key is `sk-`, up to two lower-case family words (`admin-`, `proj-`, `svcacct-`,
`ant-admin01-`, `ant-api03-`), then its secret characters. Only the secret part makes a token key
material: the bare prefixes (`sk-admin-`, `sk-ant-admin...`) and masked hints
(`sk-admin-...abcd`, where the dots end the token) are advice to keep.
"""

from __future__ import annotations

import re

_FAMILY = re.compile(r"(?:[a-z]{2,9}[0-9]{0,2}-){0,2}")
# Fewer secret characters than this cannot identify a key (real ones carry well over 40);
# more than this are treated as a key, or a piece of one, and masked whole.
MIN_SECRET_CHARS = 8
MASK = "sk-***"
_SK_TOKEN = re.compile(r"sk-[A-Za-z0-9_\-]+")


def scrub(text: str) -> str:
    """`text` with every token that carries key material replaced by `sk-***`."""
    return _SK_TOKEN.sub(_mask_if_secret, text)


def _mask_if_secret(match: re.Match[str]) -> str:
    token = match.group(0)
    secret = token.removeprefix("sk-")
    family = _FAMILY.match(secret)
    secret = secret[family.end() :] if family else secret
    return MASK if len(secret) >= MIN_SECRET_CHARS else token
