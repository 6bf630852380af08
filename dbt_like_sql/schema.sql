-- schema: the provider-agnostic warehouse tables (contract in DESIGN.md, "Warehouse contract");
-- each provider's raw table is in its folder (grafient_pipeline/providers/<name>/schema_<name>.sql).
-- Built from: nothing; run before any model. Idempotent.
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
    other_usd DECIMAL(38, 16) NOT NULL,
    provider VARCHAR
);

CREATE TABLE IF NOT EXISTS rollup_token_type_daily (
    integration_id VARCHAR NOT NULL,
    cost_date DATE NOT NULL,
    token_type VARCHAR NOT NULL,
    amount_usd DECIMAL(38, 16) NOT NULL,
    provider VARCHAR
);

-- The providers' names, from grafient_pipeline/providers (written with each sync).
CREATE TABLE IF NOT EXISTS dim_providers (
    provider VARCHAR PRIMARY KEY,
    title VARCHAR NOT NULL
);

-- Names people know for the ids in the cost data (OpenAI projects, Anthropic workspaces; API
-- keys), refreshed with each sync. A renamed project keeps its id; an archived or deleted one
-- keeps its last name. Never key material: only the redacted value the API shows.
CREATE TABLE IF NOT EXISTS dim_projects (
    provider VARCHAR NOT NULL,
    integration_id VARCHAR NOT NULL,
    project_id VARCHAR NOT NULL,
    name VARCHAR,
    status VARCHAR,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    PRIMARY KEY (integration_id, project_id)
);

CREATE TABLE IF NOT EXISTS dim_api_keys (
    provider VARCHAR NOT NULL,
    integration_id VARCHAR NOT NULL,
    api_key_id VARCHAR NOT NULL,
    project_id VARCHAR,
    name VARCHAR,
    redacted_value VARCHAR,
    status VARCHAR,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    PRIMARY KEY (integration_id, api_key_id)
);

-- The staging file a fetch writes (format in sync.py's stage_chunks), as rows: one per API
-- result, the bucket's times as UTC timestamps, amounts as the client's exact decimal text.
-- Every provider's raw model reads its staged files through this one macro.
CREATE OR REPLACE MACRO staged_results(path) AS TABLE
SELECT
    * REPLACE (
        make_timestamp(bucket_start * 1000000) AS bucket_start,
        make_timestamp(bucket_end * 1000000) AS bucket_end
    )
FROM read_csv(
    path,
    header = false,
    auto_detect = false,
    delim = chr(31),
    quote = chr(2),
    escape = chr(2),
    nullstr = chr(3),
    new_line = '\n',  -- a CR inside a result's JSON is data, not a line end
    columns = {
        'bucket_start': 'BIGINT',
        'bucket_end': 'BIGINT',
        'amount_value': 'VARCHAR',
        'quantity': 'VARCHAR',
        'escaped': 'BOOLEAN',
        'line_item': 'VARCHAR',
        'project_id': 'VARCHAR',
        'api_key_id': 'VARCHAR',
        'currency': 'VARCHAR',
        'quantity_unit': 'VARCHAR',
        'raw_json': 'VARCHAR',
        'fields': 'VARCHAR'  -- a bulk-decoded result's normalized fields (JSON), else null
    }
);
