-- fct_costs_anthropic: Anthropic's raw results as fct_costs rows, for one integration and range.
-- Built from: raw_anthropic_costs, dim_integrations.
-- token_type: uncached input -> input, output -> output, cache read -> cached_input, cache
-- creation (5m, 1h) -> cache_write; anything else, and every non-token cost type (web search,
-- code execution, ...), -> other, its text kept in line_item. service_tier: standard (or none)
-- -> default, others as sent (batch). line_item: the description, or (ungrouped) the
-- dimensions composed as the client composes them. is_final is false for today (UTC).
-- depends_on: raw_anthropic_costs
DELETE FROM fct_costs
WHERE integration_id = $integration_id
  AND cost_date BETWEEN $start_date::DATE AND $end_date::DATE;

INSERT INTO fct_costs
SELECT
    r.integration_id,
    'anthropic',
    i.organization_id,
    r.bucket_start::DATE AS cost_date,
    r.workspace_id,
    NULL,
    coalesce(
        r.description,
        nullif(concat_ws(', ', r.model, r.cost_type, r.token_type, r.service_tier,
                         r.context_window), '')
    ),
    r.model,
    CASE
        WHEN coalesce(r.cost_type, 'tokens') <> 'tokens' THEN 'other'
        WHEN r.token_type = 'uncached_input_tokens' THEN 'input'
        WHEN r.token_type = 'output_tokens' THEN 'output'
        WHEN r.token_type = 'cache_read_input_tokens' THEN 'cached_input'
        WHEN starts_with(r.token_type, 'cache_creation.') THEN 'cache_write'
        ELSE 'other'
    END,
    CASE
        WHEN r.service_tier IS NULL OR lower(r.service_tier) = 'standard' THEN 'default'
        ELSE lower(r.service_tier)
    END,
    r.amount_usd,
    r.currency,
    NULL,
    NULL,
    r.bucket_start::DATE < $today::DATE
FROM raw_anthropic_costs AS r
LEFT JOIN dim_integrations AS i ON i.integration_id = r.integration_id
WHERE r.integration_id = $integration_id
  AND r.bucket_start >= $start_date::TIMESTAMP
  AND r.bucket_start < $end_date::TIMESTAMP + INTERVAL 1 DAY;
