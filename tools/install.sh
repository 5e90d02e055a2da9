#!/usr/bin/env bash
# Install DeepCraters and everything it needs into .venv/ at the repository root.
# Idempotent: a second run finds everything in place and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

# 1. System packages: PostGIS for the local PostgreSQL 15 (Debian), when missing.
if ! dpkg -s postgresql-15-postgis-3 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "[install] apt-get install postgresql-15-postgis-3"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15-postgis-3 >/dev/null
  else
    echo "[install] PostGIS missing: run 'sudo apt-get install postgresql-15-postgis-3'" >&2
  fi
fi

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV"
  python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)

# A stamp of the inputs that decide what is installed: unchanged inputs, nothing to do.
stamp_now=$(cat setup.py tools/install.sh tools/install_detectron2.py | sha1sum | cut -d' ' -f1)
stamp_file="$VENV/.deepcraters-install"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_now" ] \
   && "$PY" -c "import detectron2, detectron2_rfcn, age_net, etl, atlas_db" 2>/dev/null; then
  echo "[install] up to date ($VENV)"
  exit 0
fi

# 3. torch + torchvision first, pinned: these exact builds work together (a newer torch, or
#    torch 2.13 with PyPI's torchvision, does not).
if ! "$PY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')))" 2>/dev/null; then
  echo "[install] torch 2.14.1 + torchvision 0.29.1"
  "${PIP[@]}" torch==2.14.1 torchvision==0.29.1
fi
# detectron2.model_zoo imports pkg_resources, which setuptools 81 removed.
"${PIP[@]}" "setuptools<81" wheel

# 4. detectron2 (not on PyPI; Detectron2 plugins install it first).
"$PY" tools/install_detectron2.py

# 5. This project and its dependencies, editable so that tools/ and tests/ see the source.
echo "[install] deepcraters and its dependencies"
"${PIP[@]}" --no-build-isolation -e .

"$PY" -c "import detectron2, detectron2_rfcn, age_net, etl, atlas_db; print('[install] ok: detectron2', detectron2.__version__)"
echo "$stamp_now" > "$stamp_file"
