#!/bin/sh
# Every container starts here: GRAFIENT_HOME (a volume) gets its dagster_home/dagster.yaml from
# the settings (PostgreSQL storage when GRAFIENT_DAGSTER_POSTGRES_URL is set; the URL stays in
# the environment, never in the file), then the command runs.
set -eu
python -c "from grafient_pipeline.instance import prepare_home; \
from grafient_pipeline.settings import load_settings; prepare_home(load_settings())"
exec "$@"
