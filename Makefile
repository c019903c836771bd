# Two commands: `make dev` (the local stack in the foreground) and `make test` (the whole suite, offline).
# The venv is created on first use; `pip install -e '.[local]'` runs again only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-pyproject
PYTEST_FLAGS ?= -q -p no:cacheprovider

.PHONY: dev test chaos bench install worker clean-state

dev: $(STAMP)
	$(BIN)/runbook dev

# The whole suite, the failure matrix's quick scope included, spread over TEST_JOBS processes (pytest-xdist). Each test
# file goes whole to one process (its module fixtures are set up once), in the order tests/conftest.py gives: the
# longest files first (the local stack, the matrix, whose session fixture plays its cases MATRIX_CONCURRENCY at a
# time), then the files with the most tests, so that no long file is left running alone at the end. Most tests wait
# on servers and timers, so 4 processes suit 2 cores (a fresh clone, idle: 286 s with 3, 259 s with 4, the same CPU;
# a process's collection costs 4 s of CPU once tests/warm_bytecode.py has written the bytecode that
# PYTHONDONTWRITEBYTECODE, set by many shells, would have every process compile again).
TEST_JOBS ?= 4
MATRIX_CONCURRENCY ?= 3
test: $(STAMP)
	$(BIN)/python -m tests.warm_bytecode
	MATRIX_CONCURRENCY=$(MATRIX_CONCURRENCY) $(BIN)/pytest $(PYTEST_FLAGS) -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

# The whole failure matrix (every step x every fault; MATRIX_SCOPE=quick for make test's scope): prints matrix_cases, matrix_failures and
# matrix_wall_s, one line per failing case, and writes them to .state/matrix-report.txt.
chaos: $(STAMP)
	MATRIX_SCOPE=full $(BIN)/pytest $(PYTEST_FLAGS) -m matrix tests/matrix

bench: $(STAMP)
	$(BIN)/python bench/run.py

worker: $(STAMP)
	$(BIN)/runbook worker

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[local]'
	touch $(STAMP)

# Forget the local stack's state (Temporal history, PostgreSQL data, logs). Stop `make dev` first.
clean-state:
	rm -rf .state
