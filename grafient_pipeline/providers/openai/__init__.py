"""OpenAI: the Admin Costs API (`GET /v1/organization/costs`) with an `sk-admin-` key."""

from pathlib import Path

from grafient_pipeline.providers.base import Provider
from grafient_pipeline.providers.openai.client import CostsClient
from grafient_pipeline.providers.openai.dim_line_items import register_line_items

PROVIDER = Provider(
    name="openai",
    title="OpenAI",
    key_prefix="sk-admin-",
    default_base_url="https://api.openai.com/v1",
    base_url_setting="GRAFIENT_OPENAI_BASE_URL",
    raw_table="raw_openai_costs",
    raw_usd_column="amount_value",
    sql_dir=Path(__file__).resolve().parent,
    client=CostsClient,
    emulator_module="grafient_pipeline.providers.openai.emulator",
    prepare_fct=register_line_items,
)
