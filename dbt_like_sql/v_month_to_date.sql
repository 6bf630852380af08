-- v_month_to_date: spend in the current UTC calendar month per integration and model (view).
-- Built from: rollup_model_daily.
-- depends_on: schema
CREATE OR REPLACE VIEW v_month_to_date AS
SELECT
    integration_id,
    model,
    sum(amount_usd) AS amount_usd,
    sum(input_usd) AS input_usd,
    sum(output_usd) AS output_usd,
    sum(cached_input_usd) AS cached_input_usd,
    sum(cache_write_usd) AS cache_write_usd,
    sum(other_usd) AS other_usd,
    provider
FROM rollup_model_daily
WHERE cost_date >= date_trunc('month', (now() AT TIME ZONE 'UTC')::DATE)
GROUP BY integration_id, model, provider;
