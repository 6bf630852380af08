-- raw_openai_costs: one row per Costs API result for one integration and date range.
-- Built from: the staging CSV the fetch step wrote ($staging_path); replaces the slice.
-- depends_on: schema
DELETE FROM raw_openai_costs
WHERE integration_id = $integration_id
  AND bucket_start >= $start_date::TIMESTAMP
  AND bucket_start < $end_date::TIMESTAMP + INTERVAL 1 DAY;

INSERT INTO raw_openai_costs
SELECT
    $integration_id,
    make_timestamp(bucket_start::BIGINT * 1000000),
    make_timestamp(bucket_end::BIGINT * 1000000),
    line_item,
    project_id,
    api_key_id,
    amount_value::DECIMAL(38, 16),
    currency,
    quantity::DECIMAL(38, 16),
    quantity_unit,
    $fetched_at::TIMESTAMP,
    $run_id,
    raw_json
FROM read_csv(
    $staging_path, header = true, all_varchar = true, quote = '"', escape = '"'
)
WHERE make_timestamp(bucket_start::BIGINT * 1000000) >= $start_date::TIMESTAMP
  AND make_timestamp(bucket_start::BIGINT * 1000000) < $end_date::TIMESTAMP + INTERVAL 1 DAY;
