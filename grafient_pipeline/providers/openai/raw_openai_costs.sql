-- raw_openai_costs: one row per Costs API result for one integration and date range.
-- Built from: the staging file the fetch step wrote ($staging_path; format in sync.py: fields
-- separated by chr(31), the raw JSON quoted by chr(2), chr(3) for null, amounts as the client's
-- exact decimal text, text fields as the client parsed them, as JSON literals when `escaped`);
-- adds the file's rows to the slice, after deleting the slice's rows when $replace. A slice's
-- files load in one transaction: the first replaces the slice, the next ones add to it.
-- depends_on: schema_openai
DELETE FROM raw_openai_costs
WHERE $replace
  AND integration_id = $integration_id
  AND bucket_start >= $start_date::TIMESTAMP
  AND bucket_start < $end_date::TIMESTAMP + INTERVAL 1 DAY;

INSERT INTO raw_openai_costs
SELECT
    $integration_id,
    bucket_start,
    bucket_end,
    CASE WHEN escaped THEN json_extract_string(line_item, '$') ELSE line_item END,
    CASE WHEN escaped THEN json_extract_string(project_id, '$') ELSE project_id END,
    CASE WHEN escaped THEN json_extract_string(api_key_id, '$') ELSE api_key_id END,
    amount_value::DECIMAL(38, 16),
    CASE WHEN escaped THEN json_extract_string(currency, '$') ELSE currency END,
    quantity::DECIMAL(38, 16),
    CASE WHEN escaped THEN json_extract_string(quantity_unit, '$') ELSE quantity_unit END,
    $fetched_at::TIMESTAMP,
    $run_id,
    raw_json
FROM staged_results($staging_path)
WHERE bucket_start >= $start_date::TIMESTAMP
  AND bucket_start < $end_date::TIMESTAMP + INTERVAL 1 DAY;
