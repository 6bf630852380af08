"""The one scrubber for text a person sees or the registry stores: key material out, hints in.

An OpenAI key is `sk-` (or `sk-admin-`, `sk-proj-`, `sk-svcacct-`) followed by its secret
characters. Only the secret part makes a token key material: the bare prefixes (`sk-admin-`)
and masked hints (`sk-admin-...abcd`, where the dots end the token) are advice to keep.
"""

from __future__ import annotations

import re

KEY_FAMILIES = ("admin-", "proj-", "svcacct-")
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
    family = next((f for f in KEY_FAMILIES if secret.startswith(f)), "")
    secret = secret.removeprefix(family)
    return MASK if len(secret) >= MIN_SECRET_CHARS else token
