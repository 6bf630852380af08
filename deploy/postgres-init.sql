-- Run once by the postgres image on its first start (docker-entrypoint-initdb.d): the databases
-- beside Dagster's (POSTGRES_DB): the registry (GRAFIENT_REGISTRY_URL) and the DuckLake catalog
-- (GRAFIENT_WAREHOUSE=ducklake:...). Grafient creates its tables in them itself.
CREATE DATABASE registry;
CREATE DATABASE lake;
