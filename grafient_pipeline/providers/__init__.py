"""The providers Grafient reads costs from: the one place that lists them.

A provider is a folder (its client, emulator, line-item mapping, raw table and fct SQL) plus one
line below; nothing else in the code names a provider.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

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


def local_api_down(base_url: str) -> str | None:
    """When an integration's API is on this machine (the demo's emulator) and nothing listens
    there: what to do about it. None for remote APIs, or when something answers."""
    url = urlsplit(base_url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=0.5):
            return None
    except OSError:
        return (
            f"nothing answers at {base_url}: this integration was added against a local "
            f"emulator, which is not running; start the demo again (`make demo` or `grafient "
            f"demo`) or `grafient emulator --port {port}`"
        )
