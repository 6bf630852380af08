-- v_api_key_costs: spend per integration, day and API key with the key's name and redacted value
-- beside its id (the id itself until a name is known) (view). Never key material.
-- Built from: fct_costs, dim_api_keys.
-- depends_on: schema
CREATE OR REPLACE VIEW v_api_key_costs AS
SELECT
    f.integration_id,
    f.provider,
    f.cost_date,
    f.api_key_id,
    coalesce(k.name, f.api_key_id, '(no key)') AS api_key_name,
    k.redacted_value,
    sum(f.amount_usd) AS amount_usd
FROM fct_costs AS f
LEFT JOIN dim_api_keys AS k
    ON k.integration_id = f.integration_id AND k.api_key_id = f.api_key_id
GROUP BY ALL;
