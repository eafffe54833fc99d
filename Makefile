# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create (or reuse) .venv from the pinned lock file.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := data/demo
JOBS ?= 2

.PHONY: demo test test-isa test-all bench venv clean

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

# The numeric tests (marker `numeric`) once per CPU code path. torch's own kernels follow
# ATEN_CPU_CAPABILITY, but its FFT and matmul go through MKL (MKL_ENABLE_INSTRUCTIONS) and its
# convolutions through oneDNN (ONEDNN_MAX_CPU_ISA): all three are set together. A host without
# AVX-512 runs its best path in the last round; each round prints the paths it got.
ISA_PATHS := default,SSE4_2,SSE41 avx2,AVX2,AVX2 avx512,AVX512,AVX512_CORE
test-isa: $(STAMP)
	@set -e; for p in $(ISA_PATHS); do \
	  set -- $$(echo $$p | tr , ' '); \
	  export ATEN_CPU_CAPABILITY=$$1 MKL_ENABLE_INSTRUCTIONS=$$2 ONEDNN_MAX_CPU_ISA=$$3; \
	  $(PY) -c "import torch; print('== ATen', torch.backends.cpu.get_cpu_capability(), '| MKL $$2 | oneDNN $$3')"; \
	  $(PY) -m pytest -q -n $(JOBS) -m "numeric and not slow"; \
	done

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
