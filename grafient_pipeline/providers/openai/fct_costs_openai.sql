-- fct_costs_openai: OpenAI's raw results as fct_costs rows, for one integration and date range.
-- Built from: raw_openai_costs, dim_line_items (parsed line items), dim_integrations.
-- is_final is false for today (UTC): the API still adds to the current day. On DuckLake (no
-- keys) two writers may both add a new line item's parse: one row per line item is joined.
-- depends_on: raw_openai_costs
DELETE FROM fct_costs
WHERE integration_id = $integration_id
  AND cost_date BETWEEN $start_date::DATE AND $end_date::DATE;

INSERT INTO fct_costs
SELECT
    r.integration_id,
    'openai',
    i.organization_id,
    r.bucket_start::DATE AS cost_date,
    r.project_id,
    r.api_key_id,
    r.line_item,
    li.model,
    coalesce(li.token_type, 'other'),
    coalesce(li.service_tier, 'default'),
    r.amount_value,
    r.currency,
    r.quantity,
    r.quantity_unit,
    r.bucket_start::DATE < $today::DATE
FROM raw_openai_costs AS r
LEFT JOIN (
    SELECT * FROM dim_line_items QUALIFY row_number() OVER (PARTITION BY line_item) = 1
) AS li ON li.line_item = r.line_item
LEFT JOIN dim_integrations AS i ON i.integration_id = r.integration_id
WHERE r.integration_id = $integration_id
  AND r.bucket_start >= $start_date::TIMESTAMP
  AND r.bucket_start < $end_date::TIMESTAMP + INTERVAL 1 DAY;
