-- v_daily_costs: total spend per integration and day (view).
-- Built from: fct_costs.
-- depends_on: schema
CREATE OR REPLACE VIEW v_daily_costs AS
SELECT
    integration_id,
    cost_date,
    sum(amount_usd) AS amount_usd,
    bool_and(is_final) AS is_final,
    provider
FROM fct_costs
GROUP BY integration_id, cost_date, provider;
