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

test-fast:          ## the inner loop: no database, no slow tests, no real data (under a minute)
	$(PY) -m pytest -q -m "not db and not slow and not real_data" tests

bench:              ## the benchmarks of README "Results" (R-FCN vs Faster R-CNN; the atlas at 1.3 M craters)
	$(PY) benchmarks/bench_rfcn_vs_faster_rcnn.py --iters 3 --out benchmarks/results/rfcn_vs_faster_rcnn_cpu.json
	$(PY) benchmarks/bench_atlas_db.py

demo:               ## the whole pipeline on the embedded synthetic world
	$(VENV)/bin/deepcraters demo --out demo_output

figure:             ## the picture in docs/
	$(VENV)/bin/deepcraters figure --out docs/synthetic_tile.png

clean-venv:
	rm -rf $(VENV)
