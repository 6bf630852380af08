"""Dagster resources: thin wrappers that build the plain-Python clients from settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dagster as dg

from grafient_pipeline.openai.client import CostsClient
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings, load_settings


class OpenAICostsResource(dg.ConfigurableResource):
    """Where the Costs API is. Keys never pass through config: runs read them from the vault."""

    base_url: str
    page_size: int = 180

    def client(self, api_key: str) -> CostsClient:
        return CostsClient(api_key, self.base_url, page_size=self.page_size)


class RegistryResource(dg.ConfigurableResource):
    """The integrations registry under GRAFIENT_HOME (the master key comes from the env)."""

    home: str

    @property
    def settings(self) -> Settings:
        return dataclasses.replace(load_settings(), home=Path(self.home))

    def open(self) -> Registry:
        return Registry.from_settings(self.settings)
