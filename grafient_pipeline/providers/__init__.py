"""The providers Grafient reads costs from: the one place that lists them.

A provider is a folder (its client, emulator, line-item mapping, raw table and fct SQL) plus one
line below; nothing else in the code names a provider.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from grafient_pipeline.providers.anthropic import PROVIDER as ANTHROPIC
from grafient_pipeline.providers.base import Provider
from grafient_pipeline.providers.openai import PROVIDER as OPENAI

PROVIDERS: dict[str, Provider] = {p.name: p for p in (OPENAI, ANTHROPIC)}
DEFAULT_PROVIDER = OPENAI.name


class UnknownProvider(ValueError):
    pass


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name.strip().lower()]
    except KeyError:
        raise UnknownProvider(
            f"unknown provider {name!r}: choose one of {', '.join(PROVIDERS)}"
        ) from None


def resolve_base_url(
    provider: Provider, stored: str | None, env: Mapping[str, str] | None = None
) -> str:
    """An integration's API base URL: the one stored with it (set at add time), else the
    provider's setting in the environment (integrations added before URLs were stored), else the
    provider's public API."""
    env = os.environ if env is None else env
    return (stored or env.get(provider.base_url_setting) or provider.default_base_url).rstrip("/")


def base_url_to_store(provider: Provider, env: Mapping[str, str] | None = None) -> str | None:
    """What `integrations add` stores: the environment's override, or None for the public API."""
    env = os.environ if env is None else env
    override = (env.get(provider.base_url_setting) or "").rstrip("/")
    return override if override and override != provider.default_base_url else None
