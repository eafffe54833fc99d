# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create (or reuse) .venv from the pinned lock file.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := data/demo
JOBS ?= 2

.PHONY: demo test test-all bench venv clean

venv: $(STAMP)

$(STAMP): requirements/lock.txt setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/lock.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m shardgen.cli synth $(DEMO)-src --seed 0 --num-clips 2000 --workers $(JOBS)
	$(PY) -m shardgen.cli pack --recipe csv $(DEMO)-src $(DEMO) --workers $(JOBS) --overwrite
	$(PY) -m shardgen.cli verify $(DEMO)
	$(PY) -m shardgen.cli stats $(DEMO) --plot $(DEMO)/classes.png
	$(PY) -m wds_audio.demo $(DEMO)

test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS)

bench: $(STAMP)   # long: minutes each; results in benchmarks/results/
	$(PY) benchmarks/pack.py
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/remote.py
	$(PY) benchmarks/rebalance.py
	$(PY) benchmarks/recipes.py

clean:
	rm -rf $(DEMO) $(DEMO)-src .pytest_cache
