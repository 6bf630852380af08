"""The Dashboard and the Integrations page: a small ASGI app (Starlette, Jinja2, uvicorn).

It reads the snapshot (grafient_pipeline.snapshot), never the warehouse, so a sync that holds the
warehouse's write lock never makes a page wait; actions go through grafient_pipeline.operations.
"""
