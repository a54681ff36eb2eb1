# `make demo` and `make test` create .venv and install everything they need on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RESULTS := results

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

data/synthetic/GlaS/Grade.csv: | install
	$(PY) data/synthetic.py --out data/synthetic/GlaS

demo: install data/synthetic/GlaS/Grade.csv
	$(PY) active.py with demo results_dir=$(RESULTS)
	$(PY) active.py with demo heuristic=random results_dir=$(RESULTS)
	$(PY) -m utils.report $(RESULTS)

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m pip install --quiet ruff
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf $(RESULTS) data/synthetic .pytest_cache
