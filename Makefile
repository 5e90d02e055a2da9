# DeepCraters: the commands a user and CI run. See README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install db test test-fast demo figure bench clean-venv

install:            ## create .venv and install everything (idempotent)
	bash tools/install.sh

db:                 ## make sure a PostGIS database answers at $$DATABASE_URL (or start a local one)
	bash tools/db.sh

test:               ## the whole suite (needs PostGIS: see 'make db')
	$(PY) -m pytest -q tests

demo:               ## the whole pipeline on the embedded synthetic world
	$(VENV)/bin/deepcraters demo --out demo_output

figure:             ## the picture in docs/
	$(VENV)/bin/deepcraters figure --out docs/synthetic_tile.png

clean-venv:
	rm -rf $(VENV)
