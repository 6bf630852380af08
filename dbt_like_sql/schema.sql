-- schema: the warehouse tables (contract in DESIGN.md, "Warehouse contract").
-- Built from: nothing; run before any model. Idempotent.
CREATE TABLE IF NOT EXISTS raw_openai_costs (
    integration_id VARCHAR NOT NULL,
    bucket_start TIMESTAMP NOT NULL,   -- UTC
    bucket_end TIMESTAMP NOT NULL,     -- UTC
    line_item VARCHAR,
    project_id VARCHAR,
    api_key_id VARCHAR,
    amount_value DECIMAL(38, 16) NOT NULL,
    currency VARCHAR,
    quantity DECIMAL(38, 16),
    quantity_unit VARCHAR,
    fetched_at TIMESTAMP NOT NULL,     -- UTC
    run_id VARCHAR NOT NULL,
    -- the result object exactly as the API sent it; zstd: a third of the default compression's
    -- size and twice as fast to write (it is most of a backfill's bytes)
    raw_json VARCHAR NOT NULL USING COMPRESSION zstd
);

CREATE TABLE IF NOT EXISTS dim_line_items (
    line_item VARCHAR PRIMARY KEY,
    model VARCHAR,
    token_type VARCHAR NOT NULL,
    service_tier VARCHAR NOT NULL,
    modality VARCHAR,
    long_context BOOLEAN NOT NULL,
    recognized BOOLEAN DEFAULT true,  -- false: text the parser does not know
    charge VARCHAR  -- the grouping name of a charge without a model (web search tool calls)
);

CREATE TABLE IF NOT EXISTS dim_integrations (
    integration_id VARCHAR PRIMARY KEY,
    label VARCHAR NOT NULL,
    provider VARCHAR NOT NULL,
    plan VARCHAR NOT NULL,
    organization_id VARCHAR,
    status VARCHAR NOT NULL,
    last_synced_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS fct_costs (
    integration_id VARCHAR NOT NULL,
    provider VARCHAR NOT NULL,
    organization_id VARCHAR,
    cost_date DATE NOT NULL,
    project_id VARCHAR,
    api_key_id VARCHAR,
    line_item VARCHAR,
    model VARCHAR,
    token_type VARCHAR NOT NULL,
    service_tier VARCHAR NOT NULL,
    amount_usd DECIMAL(38, 16) NOT NULL,
    currency VARCHAR,
    quantity DECIMAL(38, 16),
    quantity_unit VARCHAR,
    is_final BOOLEAN NOT NULL
);

CREATE TABLE IF NOT EXISTS rollup_model_daily (
    integration_id VARCHAR NOT NULL,
    cost_date DATE NOT NULL,
    model VARCHAR NOT NULL,
    amount_usd DECIMAL(38, 16) NOT NULL,
    input_usd DECIMAL(38, 16) NOT NULL,
    output_usd DECIMAL(38, 16) NOT NULL,
    cached_input_usd DECIMAL(38, 16) NOT NULL,
    cache_write_usd DECIMAL(38, 16) NOT NULL,
    other_usd DECIMAL(38, 16) NOT NULL
);

CREATE TABLE IF NOT EXISTS rollup_token_type_daily (
    integration_id VARCHAR NOT NULL,
    cost_date DATE NOT NULL,
    token_type VARCHAR NOT NULL,
    amount_usd DECIMAL(38, 16) NOT NULL
);
