"""dim_line_items: OpenAI's line-item texts, parsed once each by the project's one parser."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb

from grafient_pipeline.providers.openai.line_items import parse_line_item


def register_line_items(conn: duckdb.DuckDBPyConnection, params: Mapping[str, Any]) -> None:
    """Parse the slice's line items that dim_line_items does not know yet (fct_costs_openai
    joins them)."""
    new_items = conn.execute(
        """
        SELECT DISTINCT r.line_item FROM raw_openai_costs r
        WHERE r.integration_id = $integration_id
          AND r.bucket_start >= $start_date::TIMESTAMP
          AND r.bucket_start < $end_date::TIMESTAMP + INTERVAL 1 DAY
          AND r.line_item IS NOT NULL
          AND r.line_item NOT IN (SELECT line_item FROM dim_line_items)
        """,
        {k: params[k] for k in ("integration_id", "start_date", "end_date")},
    ).fetchall()
    insert_line_items(conn, [text for (text,) in new_items])


def insert_line_items(conn: duckdb.DuckDBPyConnection, texts: list[str]) -> None:
    """Add line items to dim_line_items, parsed by the project's one parser."""
    rows = []
    for text in texts:
        item = parse_line_item(text)
        rows.append(
            (text, item.model, item.token_type, item.service_tier, item.modality,
             item.long_context, item.recognized, item.charge)
        )  # fmt: skip
    if rows:
        conn.executemany(
            "INSERT INTO dim_line_items (line_item, model, token_type, service_tier, modality, "
            "long_context, recognized, charge) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
