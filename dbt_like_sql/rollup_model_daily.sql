-- rollup_model_daily: spend per integration, day and model, split by token type.
-- Built from: fct_costs. Non-token charges (token_type 'other') carry no model, so their line
-- item stands in for it, in lowercase with whitespace runs collapsed (the parser's LineItem.charge),
-- so `Web search tool calls` and `web search tool calls` are one row. Every dollar of fct_costs
-- appears in exactly one row here.
-- depends_on: schema
DELETE FROM rollup_model_daily
WHERE integration_id = $integration_id
  AND cost_date BETWEEN $start_date::DATE AND $end_date::DATE;

INSERT INTO rollup_model_daily
SELECT
    integration_id,
    cost_date,
    coalesce(
        model,
        nullif(lower(trim(regexp_replace(line_item, '[ \t\n\r\f\v]+', ' ', 'g'))), ''),
        '(unknown)'
    ) AS model,
    sum(amount_usd),
    coalesce(sum(amount_usd) FILTER (WHERE token_type = 'input'), 0),
    coalesce(sum(amount_usd) FILTER (WHERE token_type = 'output'), 0),
    coalesce(sum(amount_usd) FILTER (WHERE token_type = 'cached_input'), 0),
    coalesce(sum(amount_usd) FILTER (WHERE token_type = 'cache_write'), 0),
    coalesce(sum(amount_usd) FILTER (WHERE token_type = 'other'), 0),
    provider
FROM fct_costs
WHERE integration_id = $integration_id
  AND cost_date BETWEEN $start_date::DATE AND $end_date::DATE
GROUP BY ALL;
