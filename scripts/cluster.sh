#!/usr/bin/env bash
# The docker-compose topology as local processes: one-shot migration, WORKERS workers, beat,
# Flower behind basic auth and the admin API, on the local Postgres and Redis.
#
#   WORKERS=4 scripts/cluster.sh              # the demo app and its two synthetic sources
#   INGESTION_APP=myapp scripts/cluster.sh    # your app (the module you give celery -A)
#
# Settings come from the environment (see docs/operations.md). A token and a Flower password
# are generated into .cluster/ when INGESTION_ADMIN_TOKEN or FLOWER_BASIC_AUTH is not set.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
APP="${INGESTION_APP:-providers.demo.app}"
args=(--app "$APP" --workers "${WORKERS:-4}" --run-dir "${CLUSTER_DIR:-.cluster}"
      --api-port "${API_PORT:-8000}" --flower-port "${FLOWER_PORT:-5555}")
if [[ "$APP" == "providers.demo.app" ]]; then
  args+=(--demo-sources)
fi
export INGESTION_DATABASE_URL="${INGESTION_DATABASE_URL:-postgresql+psycopg2://postgres@127.0.0.1:5432/ingestion}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0}"
exec "$PYTHON" -m providers.demo.cluster "${args[@]}"
