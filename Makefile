# Everything a fresh machine needs: `make train` and `make test` create .venv and install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

# every family that trains from nothing, from conf/model/ (gensuite.registry; latent_diffusion needs a VAE's checkpoint)
FAMILIES ?= $(shell $(PY) -m gensuite.registry)

.PHONY: help install train test smoke test-all lint format bench compare photos tensorboard clean
.DEFAULT_GOAL := help

help:  ## this list: every target with its one-line description
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-zA-Z_-]+):.*## (.*)/\1\t\2/' | \
		awk -F '\t' '{ printf "  make %-12s %s\n", $$1, $$2 }'

install: $(STAMP)  ## create .venv and install the suite (editable) with its dev and sweep extras

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,sweeps]"
	@touch $(STAMP)

train: install  ## train the default family on the embedded default data (mnist5k)
	$(PY) train.py $(ARGS)

test: install  ## the test suite (offline, CPU); a subset: make test ARGS="-k vae -x"
	$(PY) -m pytest -q $(ARGS)

smoke: install  ## every family through the real train.py on a fast_dev_run (debug=fdr), one multirun job each
	$(PY) train.py -m model=$(FAMILIES) debug=fdr $(ARGS)

test-all: lint test smoke  ## everything CI can check without a GPU: lint, the test suite, the smoke runs

lint: install  ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install  ## ruff format and ruff check --fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install  ## benchmarks: printed figures, never asserted
	$(PY) -m benchmarks $(ARGS)

compare: install  ## every family, same data, same budget: report.md / report.html
	$(PY) compare.py $(ARGS)

photos: install  ## a colour image folder built offline: data/photos32, 5000 32 px patches of sklearn's photographs
	$(PY) -m gensuite.data.photo_patches data/photos32 $(ARGS)

tensorboard: install  ## TensorBoard over logs/
	$(VENV)/bin/tensorboard --logdir logs

clean:  ## remove run outputs (logs/runs, logs/multiruns) and caches of pytest and ruff
	rm -rf logs/runs logs/multiruns .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
