# divergence_lab — `make demo` runs the main job, `make test` the test suite; both install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
STUDY  ?= kd_divergences

.PHONY: install demo sweep test test-cluster test-fast lint docs docs-check bench reproduce gpu-check clean slurm-up slurm-down

install: $(STAMP)

# torch first, pinned: the local CPU build. Anything that pulls an unpinned torch would fetch a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m divergence_lab.divergences.kernels
	touch $(STAMP)

demo: sweep
	$(BIN)/dlab-report outputs/sweeps/$(STUDY)

sweep: install
	$(BIN)/dlab -m study=$(STUDY)

# pytest-xdist: one worker per CPU, each pinned to its own share of the CPUs (tests/conftest.py)
PARALLEL := -n auto --dist worksteal
# the edit loop: the unit tests of the building blocks, the configuration and the report, no end-to-end runs
FAST_TESTS := tests/divergences tests/config tests/data tests/metrics tests/models tests/report tests/test_import_layers.py

# the whole suite but the SLURM tier (test-cluster), which needs a controller: make slurm-up
test: install
	$(BIN)/python -m pytest -q -m "not slurm" $(PARALLEL)

test-cluster: install
	$(BIN)/python -m pytest -q -m slurm

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not slurm" $(PARALLEL) $(FAST_TESTS)

lint: install
	$(BIN)/ruff check .

# the README's option lists, generated from conf/ (scripts/option_docs.py); docs-check fails on a stale one
docs: install
	$(BIN)/python scripts/option_docs.py --write

docs-check: install
	$(BIN)/python scripts/option_docs.py --check

clean:
	rm -rf outputs build dist *.egg-info .pytest_cache

bench: install
	$(BIN)/python -m benchmarks.run

# one seed of every study (sweeps/), compared bit for bit with the recorded numbers (CPU, 2 threads)
reproduce: install
	$(BIN)/python scripts/reproduce_studies.py --check docs/results/seed0.json

# every GPU preset's smoke variant (experiment=<preset>_smoke) on tiny files, the fused / Sinkhorn divergences
# on CUDA, one DDP step: a table, in under 8 minutes. Without a GPU: one line, exit 0, nothing run. Installs
# only into a missing venv.
gpu-check:
	@test -x $(BIN)/python || $(MAKE) --no-print-directory install
	@$(BIN)/python scripts/gpu_check.py

# A single-node SLURM cluster on this machine (root: installs Debian packages, starts the daemons).
slurm-up:
	bash scripts/slurm/up.sh

slurm-down:
	bash scripts/slurm/down.sh
