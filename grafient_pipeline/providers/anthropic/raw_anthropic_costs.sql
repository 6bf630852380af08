-- raw_anthropic_costs: one row per cost report result for one integration and date range.
-- Built from: the staging file the fetch step wrote ($staging_path; the format of sync.py's
-- stage_chunks, the same as raw_openai_costs reads): amount_value is the client's exact USD
-- text (the API's cents / 100); every Anthropic field is read from the result's raw JSON.
-- Adds the file's rows to the slice, after deleting the slice's rows when $replace.
-- depends_on: schema_anthropic
DELETE FROM raw_anthropic_costs
WHERE $replace
  AND integration_id = $integration_id
  AND bucket_start >= $start_date::TIMESTAMP
  AND bucket_start < $end_date::TIMESTAMP + INTERVAL 1 DAY;

INSERT INTO raw_anthropic_costs
SELECT
    $integration_id,
    bucket_start,
    bucket_end,
    json_extract_string(raw_json, '$.workspace_id'),
    json_extract_string(raw_json, '$.description'),
    json_extract_string(raw_json, '$.cost_type'),
    json_extract_string(raw_json, '$.model'),
    json_extract_string(raw_json, '$.token_type'),
    json_extract_string(raw_json, '$.service_tier'),
    json_extract_string(raw_json, '$.context_window'),
    json_extract_string(raw_json, '$.amount')::DECIMAL(38, 16),
    amount_value::DECIMAL(38, 16),
    json_extract_string(raw_json, '$.currency'),
    $fetched_at::TIMESTAMP,
    $run_id,
    raw_json
FROM staged_results($staging_path)
WHERE bucket_start >= $start_date::TIMESTAMP
  AND bucket_start < $end_date::TIMESTAMP + INTERVAL 1 DAY;
