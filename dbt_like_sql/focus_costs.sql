-- focus_costs: fct_costs in the FinOps FOCUS 1.2 column set (view), plus x_ extensions.
-- Built from: fct_costs (a charge period is one UTC day; a billing period one calendar month),
-- dim_providers (the provider's name), dim_projects (a project's or workspace's name).
-- depends_on: schema
CREATE OR REPLACE VIEW focus_costs AS
SELECT
    f.amount_usd AS BilledCost,
    f.amount_usd AS EffectiveCost,
    f.amount_usd AS ListCost,
    f.amount_usd AS ContractedCost,
    f.organization_id AS BillingAccountId,
    upper(currency) AS BillingCurrency,
    date_trunc('month', cost_date)::TIMESTAMP AS BillingPeriodStart,
    (date_trunc('month', cost_date) + INTERVAL 1 MONTH)::TIMESTAMP AS BillingPeriodEnd,
    cost_date::TIMESTAMP AS ChargePeriodStart,
    (cost_date + INTERVAL 1 DAY)::TIMESTAMP AS ChargePeriodEnd,
    'Usage' AS ChargeCategory,
    line_item AS ChargeDescription,
    coalesce(pr.title, f.provider) AS ProviderName,
    coalesce(pr.title, f.provider) AS PublisherName,
    coalesce(pr.title, f.provider) AS InvoiceIssuerName,
    'AI and Machine Learning' AS ServiceCategory,
    coalesce(pr.title, f.provider) || ' API' AS ServiceName,
    f.project_id AS SubAccountId,
    coalesce(p.name, f.project_id) AS SubAccountName,
    quantity AS ConsumedQuantity,
    quantity_unit AS ConsumedUnit,
    f.provider || '/' || f.line_item AS SkuId,
    model AS x_Model,
    token_type AS x_TokenType,
    f.integration_id AS x_IntegrationId,
    api_key_id AS x_ApiKeyId,
    is_final AS x_IsFinal,
    f.provider AS x_Provider
FROM fct_costs AS f
LEFT JOIN dim_providers AS pr ON pr.provider = f.provider
LEFT JOIN dim_projects AS p ON p.integration_id = f.integration_id AND p.project_id = f.project_id;
