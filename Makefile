# `make demo` and `make test` create .venv and install everything they need on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RESULTS := results/demo

.PHONY: install demo test test-fast lint clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The demo's synthetic GlaS (with a rare, faded tissue style) is generated on first use.
demo: install
	$(PY) sweep.py --heuristics entropy random --runs 0-4 --parallel 2 -- demo results_dir=$(RESULTS)

# One pytest-xdist worker per core, each with one torch thread so that workers do not fight over
# cores (a test that needs a thread count sets it); tests sharing a module's result share a worker.
PYTEST := OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -n auto --dist loadgroup

test: install
	$(PYTEST)

# Everything but whole runs and sweeps (tests marked slow or slurm).
test-fast: install
	$(PYTEST) -m "not slow and not slurm"

lint: install
	$(PY) -m pip install --quiet ruff
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf $(RESULTS) data/synthetic .pytest_cache
