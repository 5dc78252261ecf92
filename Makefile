# Everything a fresh machine needs: `make train` and `make test` create .venv and install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install train test test-all lint format bench compare tensorboard clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,sweeps]"
	@touch $(STAMP)

train: install  ## train the default family on the embedded default data (mnist5k)
	$(PY) train.py $(ARGS)

test: install  ## the test suite (offline, CPU)
	$(PY) -m pytest -q $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install  ## benchmarks: printed figures, never asserted
	$(PY) -m benchmarks $(ARGS)

compare: install  ## every family, same data, same budget: report.md / report.html
	$(PY) compare.py $(ARGS)

tensorboard: install
	$(VENV)/bin/tensorboard --logdir logs

clean:
	rm -rf logs/runs logs/multiruns .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
