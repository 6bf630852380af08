-- schema_openai: OpenAI's raw table and its parsed line items (contract in DESIGN.md).
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
