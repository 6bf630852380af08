#!/bin/sh
# The image's install step: the wheel with its extras (default `postgres`; the image passes
# GRAFIENT_EXTRAS, `postgres,ducklake` for the compose file), then a check that what the
# deployment runs is there. deploy/Dockerfile runs it; tests/test_deploy.py runs it in a fresh
# venv from the same kind of wheel.
set -eu
wheel_dir="$1"
extras="${2:-postgres}"
wheel="$(ls "$wheel_dir"/grafient_pipeline-*.whl)"
python -m pip install --no-cache-dir "${wheel}[${extras}]"
# The commands docker-compose.yaml and the Helm values start, and the modules they load.
grafient --help >/dev/null
dagster api grpc --help >/dev/null
command -v dagster-webserver dagster-daemon >/dev/null
python -c "import dagster_postgres, psycopg2, grafient_pipeline.definitions"
case ",${extras}," in
  *,ducklake,*) python -c "from grafient_pipeline.lake import check_extensions; check_extensions()" ;;
esac
