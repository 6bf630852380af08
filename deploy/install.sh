#!/bin/sh
# The image's install step: the wheel with its `postgres` extra, then a check that what the
# deployment runs is there. deploy/Dockerfile runs it; tests/test_deploy.py runs it in a fresh
# venv from the same kind of wheel.
set -eu
wheel_dir="$1"
wheel="$(ls "$wheel_dir"/grafient_pipeline-*.whl)"
python -m pip install --no-cache-dir "${wheel}[postgres]"
# The commands docker-compose.yaml and the Helm values start, and the modules they load.
grafient --help >/dev/null
dagster api grpc --help >/dev/null
command -v dagster-webserver dagster-daemon >/dev/null
python -c "import dagster_postgres, psycopg2, grafient_pipeline.definitions"
