"""Dagster resources: thin wrappers that build the plain-Python clients from settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dagster as dg

from grafient_pipeline.providers import resolve_base_url
from grafient_pipeline.providers.base import CostClient, Provider
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings, load_settings


class CostsApiResource(dg.ConfigurableResource):
    """Builds a provider's cost client for an integration. Keys never pass through config: runs
    read them from the vault; the base URL is the integration's own (see resolve_base_url)."""

    def client(self, provider: Provider, api_key: str, base_url: str | None) -> CostClient:
        return provider.client(api_key, resolve_base_url(provider, base_url))


class RegistryResource(dg.ConfigurableResource):
    """The integrations registry under GRAFIENT_HOME (the master key comes from the env)."""

    home: str

    @property
    def settings(self) -> Settings:
        return dataclasses.replace(load_settings(), home=Path(self.home))

    def open(self) -> Registry:
        return Registry.from_settings(self.settings)
