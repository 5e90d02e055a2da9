#!/usr/bin/env bash
# Make sure a PostgreSQL server with PostGIS answers for DeepCraters, and that the user
# database (DATABASE_URL, default postgresql://postgres@localhost:5432/deepcraters) and the
# test database (deepcraters_test on the same server, or TEST_DATABASE_URL) exist with the
# postgis extension. With no DATABASE_URL and no server running, start the local Debian
# cluster (creating it, trust auth on localhost, if there is none), and size the local
# server for the atlas (tune_local below). Idempotent.
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

# Server settings for the atlas, on the local cluster only (never on a DATABASE_URL server,
# whose settings are its administrator's: there it prints what it would set). A query at a
# random place of a 10 million crater atlas (2.7 GB with its indexes) read its pages from
# outside Debian's default 128 MB of shared_buffers (docs/scale.md):
#   PG_SHARED_BUFFERS  buffer cache (default: 25 % of RAM, the usual rule for a dedicated server)
#   PG_MAX_WAL_SIZE    WAL between checkpoints (default 4GB; a 10 million crater load writes ~2.2 GB)
#   pg_prewarm         preloaded, so the cache is saved and reloaded across restarts (autoprewarm);
#                      the load prewarms what it wrote (atlas_db.bulk.prewarm)
#   PG_TUNE=0          leave the server's settings as they are
# Idempotent: ALTER SYSTEM writes the same values again and the server restarts only when a
# setting that needs it (shared_buffers, shared_preload_libraries) changed.
tune_local() {
  if [ "${PG_TUNE:-1}" = 0 ]; then echo "[db] PG_TUNE=0: server settings left as they are"; return 0; fi
  local mem_kb limit sb wal libs
  mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  limit=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || echo max)
  if [[ $limit =~ ^[0-9]+$ ]] && [ $((limit / 1024)) -lt "$mem_kb" ]; then mem_kb=$((limit / 1024)); fi
  sb=${PG_SHARED_BUFFERS:-$((mem_kb / 4 / 1024))MB}
  wal=${PG_MAX_WAL_SIZE:-4GB}
  if [ -n "${DATABASE_URL:-}" ]; then
    echo "[db] DATABASE_URL is set: server settings left to its administrator (suggested for the atlas:" \
         "shared_buffers = $sb, max_wal_size = $wal, shared_preload_libraries += pg_prewarm)"
    return 0
  fi
  libs=$(psql -d "$ADMIN" -tAc "SHOW shared_preload_libraries")
  if [ "$(psql -d "$ADMIN" -tAc "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_prewarm'")" = 1 ] &&
     [[ ",${libs// /}," != *,pg_prewarm,* ]]; then
    libs=${libs:+$libs,}pg_prewarm
  fi
  psql -q -d "$ADMIN" -v ON_ERROR_STOP=1 \
    -c "ALTER SYSTEM SET shared_buffers = '$sb'" \
    -c "ALTER SYSTEM SET max_wal_size = '$wal'" \
    -c "ALTER SYSTEM SET shared_preload_libraries = '$libs'" \
    -c "SELECT pg_reload_conf()" >/dev/null
  sleep 1  # the reload is asynchronous
  if [ "$(psql -d "$ADMIN" -tAc "SELECT count(*) FROM pg_settings WHERE pending_restart")" = 0 ]; then
    echo "[db] server settings: shared_buffers $(psql -d "$ADMIN" -tAc "SHOW shared_buffers"), max_wal_size $wal"
  elif [ "$(id -u)" = 0 ] && pg_lsclusters -h 2>/dev/null | grep -q "^$PGVER main 5432 online"; then
    echo "[db] restarting PostgreSQL $PGVER/main for shared_buffers = $sb, shared_preload_libraries = $libs"
    pg_ctlcluster --skip-systemctl-redirect "$PGVER" main restart
    for _ in $(seq 30); do pg_isready -q -d "$ADMIN" && break; sleep 1; done
    echo "[db] server settings: shared_buffers $(psql -d "$ADMIN" -tAc "SHOW shared_buffers"), max_wal_size $wal"
  else
    echo "[db] shared_buffers = $sb and shared_preload_libraries = $libs are set but need a restart of" \
         "the server (as root: pg_ctlcluster $PGVER main restart)" >&2
  fi
}

tune_local

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
