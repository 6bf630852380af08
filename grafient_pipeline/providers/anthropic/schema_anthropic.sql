-- schema_anthropic: Anthropic's raw table (one row per cost report result).
-- Built from: nothing; run before any model. Idempotent.
CREATE TABLE IF NOT EXISTS raw_anthropic_costs (
    integration_id VARCHAR NOT NULL,
    bucket_start TIMESTAMP NOT NULL,   -- UTC
    bucket_end TIMESTAMP NOT NULL,     -- UTC
    workspace_id VARCHAR,              -- null: the organization's default workspace
    description VARCHAR,
    cost_type VARCHAR,                 -- tokens, web_search, code_execution, ...
    model VARCHAR,
    token_type VARCHAR,                -- uncached_input_tokens, output_tokens, ...
    service_tier VARCHAR,              -- standard, batch
    context_window VARCHAR,            -- 0-200k, 200k-1M
    amount_cents DECIMAL(38, 16) NOT NULL,  -- the API's amount: cents, as it sent it
    amount_usd DECIMAL(38, 16) NOT NULL,    -- amount_cents / 100, exact
    currency VARCHAR,
    fetched_at TIMESTAMP NOT NULL,     -- UTC
    run_id VARCHAR NOT NULL,
    -- the result object exactly as the API sent it
    raw_json VARCHAR NOT NULL USING COMPRESSION zstd
);
