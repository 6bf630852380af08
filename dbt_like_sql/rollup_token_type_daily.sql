-- rollup_token_type_daily: spend per integration, day and token type
-- (input, output, cached_input, cache_write, other).
-- Built from: fct_costs.
-- depends_on: schema
DELETE FROM rollup_token_type_daily
WHERE integration_id = $integration_id
  AND cost_date BETWEEN $start_date::DATE AND $end_date::DATE;

INSERT INTO rollup_token_type_daily
SELECT integration_id, cost_date, token_type, sum(amount_usd), provider
FROM fct_costs
WHERE integration_id = $integration_id
  AND cost_date BETWEEN $start_date::DATE AND $end_date::DATE
GROUP BY ALL;
