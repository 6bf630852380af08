-- raw_openai_costs: one row per Costs API result for one integration and date range.
-- Built from: the staging file the fetch step wrote ($staging_path; format in sync.py: fields
-- separated by chr(31), the raw JSON quoted by chr(2), chr(3) for null, amounts as the client's
-- exact decimal text, text fields as the client parsed them, as JSON literals when `escaped`,
-- or all of them in `fields`: the client's normalized JSON, never the raw JSON, whose duplicate
-- keys or odd numbers only the client reads right);
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
    CASE WHEN f IS NOT NULL THEN f.line_item
         WHEN escaped THEN json_extract_string(line_item, '$') ELSE line_item END,
    CASE WHEN f IS NOT NULL THEN f.project_id
         WHEN escaped THEN json_extract_string(project_id, '$') ELSE project_id END,
    CASE WHEN f IS NOT NULL THEN f.api_key_id
         WHEN escaped THEN json_extract_string(api_key_id, '$') ELSE api_key_id END,
    coalesce(f.amount.value, amount_value)::DECIMAL(38, 16),
    CASE WHEN f IS NOT NULL THEN f.amount.currency
         WHEN escaped THEN json_extract_string(currency, '$') ELSE currency END,
    CASE WHEN f IS NOT NULL THEN f.quantity ELSE quantity END::DECIMAL(38, 16),
    CASE WHEN f IS NOT NULL THEN f.quantity_unit
         WHEN escaped THEN json_extract_string(quantity_unit, '$') ELSE quantity_unit END,
    $fetched_at::TIMESTAMP,
    $run_id,
    raw_json
FROM (
    SELECT
        *,
        json_transform(fields, '{"amount": {"value": "VARCHAR", "currency": "VARCHAR"},
            "line_item": "VARCHAR", "project_id": "VARCHAR", "api_key_id": "VARCHAR",
            "quantity": "VARCHAR", "quantity_unit": "VARCHAR"}') AS f
    FROM staged_results($staging_path)
)
WHERE bucket_start >= $start_date::TIMESTAMP
  AND bucket_start < $end_date::TIMESTAMP + INTERVAL 1 DAY;
