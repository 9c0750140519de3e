#!/bin/sh
# Runs at every `compose up` (idempotent): the registry bucket and one MinIO account per
# role, so no service holds the root credentials.
#   tickcast-writer - the feature flow and the trainer: read/write the registry bucket
#   tickcast-api    - the API: read the registry bucket only
set -eu
: "${MINIO_ROOT_PASSWORD:?}" "${MINIO_WRITER_PASSWORD:?}" "${MINIO_API_PASSWORD:?}"
until mc alias set m http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null; do sleep 1; done
mc mb -p m/tickcast-models
mc admin policy create m tickcast-registry-write /policies/writer-policy.json
mc admin policy create m tickcast-registry-read /policies/api-policy.json
mc admin user add m tickcast-writer "$MINIO_WRITER_PASSWORD"
mc admin user add m tickcast-api "$MINIO_API_PASSWORD"
mc admin policy attach m tickcast-registry-write --user tickcast-writer || true   # already attached
mc admin policy attach m tickcast-registry-read --user tickcast-api || true
