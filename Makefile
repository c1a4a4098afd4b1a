# The README's commands. `make test` and `make demo` set everything up on a fresh Debian machine with Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup dataset test lint format demo clean

setup: $(VENV)/.installed dataset

# Reinstalls whenever requirements.txt (the one place with pins) changes.
$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# The embedded default data set: Fashion-MNIST from Debian's package (IDX .gz files, see `dpkg -L`).
dataset:
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null || { echo "note: no apt-get; the data loader falls back to torchvision's download"; exit 0; }; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null; }

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: setup lint
	$(BIN)/python -m pytest

demo: setup
	@echo "make demo: the training demo is not built yet (issue #6 builds it on train.py, issue #4)."
	@echo "What exists now is the diffusion package; 'make test' runs its checks."

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
