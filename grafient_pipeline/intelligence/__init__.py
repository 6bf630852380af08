"""Spend intelligence in plain Python: forecast, anomalies, budgets, alert channels and the
alert log. No dagster here: the Dagster layer is grafient_pipeline/defs/intelligence/."""
