-- focus_costs: fct_costs in the FinOps FOCUS 1.2 column set (view), plus x_ extensions.
-- Built from: fct_costs (a charge period is one UTC day; a billing period one calendar month).
-- depends_on: schema
CREATE OR REPLACE VIEW focus_costs AS
SELECT
    amount_usd AS BilledCost,
    amount_usd AS EffectiveCost,
    amount_usd AS ListCost,
    amount_usd AS ContractedCost,
    organization_id AS BillingAccountId,
    upper(currency) AS BillingCurrency,
    date_trunc('month', cost_date)::TIMESTAMP AS BillingPeriodStart,
    (date_trunc('month', cost_date) + INTERVAL 1 MONTH)::TIMESTAMP AS BillingPeriodEnd,
    cost_date::TIMESTAMP AS ChargePeriodStart,
    (cost_date + INTERVAL 1 DAY)::TIMESTAMP AS ChargePeriodEnd,
    'Usage' AS ChargeCategory,
    line_item AS ChargeDescription,
    'OpenAI' AS ProviderName,
    'OpenAI' AS PublisherName,
    'OpenAI' AS InvoiceIssuerName,
    'AI and Machine Learning' AS ServiceCategory,
    'OpenAI API' AS ServiceName,
    project_id AS SubAccountId,
    quantity AS ConsumedQuantity,
    quantity_unit AS ConsumedUnit,
    'openai/' || line_item AS SkuId,
    model AS x_Model,
    token_type AS x_TokenType,
    integration_id AS x_IntegrationId,
    api_key_id AS x_ApiKeyId,
    is_final AS x_IsFinal
FROM fct_costs;
