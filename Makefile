# The README's commands. `make test` and `make demo` set everything up on a fresh Debian machine with Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Transparent huge pages for glibc's malloc: 1-3% faster CPU training (bench/RESULTS.md); read at process start.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: setup dataset test lint format demo reproduce-small reproduce-weightings bench clean

setup: $(VENV)/.installed dataset

# Reinstalls whenever requirements.txt (the one place with pins) or pyproject.toml changes. The repository itself
# goes in editable: every script, tools/, studies/ and bench/ import the packages without a PYTHONPATH.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
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

# One test worker per core; a file's tests stay together (they share module fixtures).
test: setup lint
	$(BIN)/python -m pytest -n auto --dist loadfile

# Train a tiny DiT (x0, const) on Fashion-MNIST, scored every 500 steps, sample it, score label accuracy and
# FD-fashion (results/demo/). `make demo FIGURE=1` also redraws the README's picture, docs/assets/demo.png.
demo: setup
	$(BIN)/python tools/demo.py $(if $(FIGURE),--docs-figure)

# The two studies train into a fresh directory (results/reproduce-*) and print their FD-fashion beside the
# committed numbers (reproduce-small after each run, reproduce-weightings in its report); OUT_DIR=results/small (or results/weightings) resumes into the committed study instead.
# Both resume where they stopped. Times are those of the committed runs on this project's 2-core machine.
STUDY_OUT = $(if $(OUT_DIR),--out $(OUT_DIR))

# The CPU convergence study: about 3.5 hours on 2 cores, its runs one after the other.
reproduce-small: setup
	$(BIN)/python studies/reproduce_small.py $(STUDY_OUT)

# The weighting and timestep-density zoo: about 3 hours on 2 cores, one worker per core.
reproduce-weightings: setup
	export OMP_NUM_THREADS=1; \
	$(BIN)/python studies/weightings_study.py --worker 0 $(STUDY_OUT) & w0=$$!; \
	$(BIN)/python studies/weightings_study.py --worker 1 $(STUDY_OUT); r1=$$?; \
	wait $$w0 && [ $$r1 = 0 ] && $(BIN)/python studies/weightings_study.py --report $(STUDY_OUT)

# The CPU benchmarks of bench/RESULTS.md (about 30 minutes; CKPT=… adds FD-fashion against NFE).
bench: setup
	bash bench/cpu.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
