"""Anthropic: the Admin API cost report (`GET /v1/organizations/cost_report`) with an
`sk-ant-admin` key."""

from pathlib import Path

from grafient_pipeline.providers.anthropic.client import AnthropicCostsClient
from grafient_pipeline.providers.base import Provider

PROVIDER = Provider(
    name="anthropic",
    title="Anthropic",
    key_prefix="sk-ant-admin",
    default_base_url="https://api.anthropic.com/v1",
    base_url_setting="GRAFIENT_ANTHROPIC_BASE_URL",
    raw_table="raw_anthropic_costs",
    raw_usd_column="amount_usd",
    sql_dir=Path(__file__).resolve().parent,
    client=AnthropicCostsClient,
    emulator_module="grafient_pipeline.providers.anthropic.emulator",
)
