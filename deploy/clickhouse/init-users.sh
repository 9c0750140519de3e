#!/bin/bash
# Runs once, when the ClickHouse volume is new (docker-entrypoint-initdb.d), as the admin
# user of CLICKHOUSE_USER/CLICKHOUSE_PASSWORD. One user per role, passwords from the
# environment (compose refuses to start without them):
#   tickcast_writer  - the flows and the trainer: read, insert, create/alter their tables
#   tickcast_api     - the API: SELECT only (readonly = 2: it may set max_execution_time,
#                      never write), queries cut off after 30 s
#   grafana          - dashboards: SELECT only, readonly = 1 (no settings, no table functions)
set -euo pipefail
: "${CLICKHOUSE_WRITER_PASSWORD:?}" "${CLICKHOUSE_API_PASSWORD:?}" "${CLICKHOUSE_GRAFANA_PASSWORD:?}"
DB="${CLICKHOUSE_DB:-tickcast}"
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE DATABASE IF NOT EXISTS ${DB};
CREATE SETTINGS PROFILE IF NOT EXISTS tickcast_api_profile SETTINGS readonly = 2,
    max_execution_time = 30 MAX 30, max_result_rows = 100000;
CREATE SETTINGS PROFILE IF NOT EXISTS grafana_profile SETTINGS readonly = 1, max_execution_time = 30;
CREATE USER IF NOT EXISTS tickcast_writer IDENTIFIED WITH sha256_password BY '${CLICKHOUSE_WRITER_PASSWORD}'
    DEFAULT DATABASE ${DB};
GRANT SELECT, INSERT, CREATE TABLE, CREATE VIEW, DROP VIEW, ALTER ADD COLUMN ON ${DB}.* TO tickcast_writer;
GRANT SELECT ON system.columns TO tickcast_writer;
CREATE USER IF NOT EXISTS tickcast_api IDENTIFIED WITH sha256_password BY '${CLICKHOUSE_API_PASSWORD}'
    DEFAULT DATABASE ${DB} SETTINGS PROFILE 'tickcast_api_profile';
GRANT SELECT ON ${DB}.* TO tickcast_api;
CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY '${CLICKHOUSE_GRAFANA_PASSWORD}'
    DEFAULT DATABASE ${DB} SETTINGS PROFILE 'grafana_profile';
GRANT SELECT ON ${DB}.* TO grafana;
SQL
