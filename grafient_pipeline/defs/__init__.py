"""The Dagster layer, one folder per concern (as dagster-open-platform's defs/): costs/ (raw ->
fct -> rollups and the jobs that build them), automation/ (schedule, sensors, freshness). Each
folder's package exposes its `defs`; definitions.py merges them. (Not `load_from_defs_folder`:
it needs the project's pyproject.toml at run time, which an installed wheel does not have.)"""
