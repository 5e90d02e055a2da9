#!/usr/bin/env bash
# Make sure a PostgreSQL server with PostGIS answers for DeepCraters, and that the user
# database (DATABASE_URL, default postgresql://postgres@localhost:5432/deepcraters) and the
# test database (deepcraters_test on the same server, or TEST_DATABASE_URL) exist with the
# postgis extension. With no DATABASE_URL and no server running, start the local Debian
# cluster (creating it, trust auth on localhost, if there is none). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${DATABASE_URL:-postgresql://postgres@localhost:5432/deepcraters}
PGVER=${PGVER:-15}

server_url() { # the same server, database "postgres"
  "${PY:-.venv/bin/python}" - "$1" <<'PY'
import sys
from sqlalchemy.engine import make_url
print(make_url(sys.argv[1]).set(database="postgres").render_as_string(hide_password=False))
PY
}

ADMIN=$(server_url "$URL")
if ! pg_isready -q -d "$ADMIN"; then
  if [ -n "${DATABASE_URL:-}" ]; then
    echo "[db] no server answers at DATABASE_URL; start it or unset DATABASE_URL to use a local one" >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "[db] no local server on port 5432; start PostgreSQL (e.g. sudo make db)" >&2
    exit 1
  fi
  if ! pg_lsclusters -h 2>/dev/null | grep -q "^$PGVER main"; then
    echo "[db] creating PostgreSQL $PGVER cluster 'main' (trust auth on localhost)"
    pg_createcluster "$PGVER" main -- --auth-local=trust --auth-host=trust >/dev/null
  fi
  echo "[db] starting PostgreSQL $PGVER/main"
  pg_ctlcluster --skip-systemctl-redirect "$PGVER" main start
  for _ in $(seq 30); do pg_isready -q -d "$ADMIN" && break; sleep 1; done
fi

ensure_db() { # $1 = database URL
  local url=$1 name
  name=$("${PY:-.venv/bin/python}" -c "import sys; from sqlalchemy.engine import make_url; print(make_url(sys.argv[1]).database)" "$url")
  if [ "$(psql -d "$ADMIN" -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" != 1 ]; then
    psql -q -d "$ADMIN" -c "CREATE DATABASE \"$name\""
  fi
  psql -q -d "$url" -c "CREATE EXTENSION IF NOT EXISTS postgis" 2>&1 | grep -v 'already exists' || true
  echo "[db] ready: $(psql -d "$url" -tAc "SELECT current_database() || ' on PostGIS ' || postgis_lib_version()")"
}

ensure_db "$URL"
ensure_db "${TEST_DATABASE_URL:-$("${PY:-.venv/bin/python}" -c "import sys; from sqlalchemy.engine import make_url; print(make_url(sys.argv[1]).set(database='deepcraters_test').render_as_string(hide_password=False))" "$URL")}"
