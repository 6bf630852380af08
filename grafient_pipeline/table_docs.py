"""What every column of the warehouse's cost tables means (shown in the Dagster UI)."""

from __future__ import annotations

_SLICE = {
    "integration_id": "Grafient integration id (one OpenAI organization's admin key).",
}
_MONEY = "Exact decimal US dollars, as OpenAI reported them (never through floats)."

COLUMN_DOCS: dict[str, dict[str, str]] = {
    "raw_openai_costs": {
        **_SLICE,
        "bucket_start": "Start of the API's daily bucket (UTC, inclusive).",
        "bucket_end": "End of the API's daily bucket (UTC, exclusive).",
        "line_item": "The API's line_item text exactly as sent (model, token kind, tier).",
        "project_id": "OpenAI project id (proj_...), or null.",
        "api_key_id": "OpenAI API key id (key_...), or null; never key material.",
        "amount_value": "amount.value, exact decimal from the API's JSON text.",
        "currency": "amount.currency as sent (only USD slices are written).",
        "quantity": "Quantity the API reports for the line item, exact decimal, or null.",
        "quantity_unit": "Unit of quantity as sent (for example 1000_tokens), or null.",
        "fetched_at": "When Grafient fetched the bucket (UTC).",
        "run_id": "The Dagster run that wrote the row.",
        "raw_json": "The result object exactly as the API sent it.",
    },
    "fct_costs": {
        **_SLICE,
        "provider": "Provider of the integration (openai).",
        "organization_id": "The provider's organization id, from Test Connection.",
        "cost_date": "UTC day of the cost.",
        "project_id": "OpenAI project id, or null.",
        "api_key_id": "OpenAI API key id, or null.",
        "line_item": "The API's line_item text, kept as sent.",
        "model": "Model parsed from the line item (non-token charges: the charge's name).",
        "token_type": "input, output, cached_input, cache_write or other (non-token charges).",
        "service_tier": "default, priority, batch, flex, scale (from the line item's prefix).",
        "amount_usd": _MONEY,
        "currency": "Currency of the amount (always USD here).",
        "quantity": "Quantity the API reports, exact decimal, or null.",
        "quantity_unit": "Unit of quantity, or null.",
        "is_final": "False for today (UTC): the API still adds to the current day.",
    },
    "rollup_model_daily": {
        **_SLICE,
        "cost_date": "UTC day.",
        "model": "Model, or the charge's name for non-token charges.",
        "amount_usd": "All spend of the model that day. " + _MONEY,
        "input_usd": "Uncached input tokens.",
        "output_usd": "Output tokens.",
        "cached_input_usd": "Cached input tokens (cache reads).",
        "cache_write_usd": "Cache writes.",
        "other_usd": "Non-token charges.",
    },
    "rollup_token_type_daily": {
        **_SLICE,
        "cost_date": "UTC day.",
        "token_type": "input, output, cached_input, cache_write or other.",
        "amount_usd": _MONEY,
    },
}
