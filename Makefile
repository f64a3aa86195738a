# The two commands a newcomer runs (see README):
#   make demo   set everything up and run the main job on the embedded default
#   make test   set everything up and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install ui db-start db-stop lint bench clean mutation

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/reconcile demo

# make ui PORT=3001 EMULATOR_PORT=8766: other ports for the UI (default 3000) and the emulator
# (default 8765). A second `make ui` in the same folder needs another PORT (it uses the first
# one's emulator); in another folder (another .reconcile/), another EMULATOR_PORT too.
ui: $(STAMP)
	$(BIN)/reconcile ui $(if $(PORT),--port $(PORT)) $(if $(EMULATOR_PORT),--emulator-port $(EMULATOR_PORT))

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/emulator_throughput.py
	$(BIN)/python benchmarks/reconcile_throughput.py
	$(BIN)/python benchmarks/many_clients.py
	$(BIN)/python benchmarks/console_pages.py
	$(BIN)/python benchmarks/full_reconcile_memory.py
	$(BIN)/python benchmarks/idle_by_base_size.py

# Mutation testing of reconcile_pipeline/engine/ and defs/checks.py (mutmut; not part of test or
# CI). Narrow it with MUTATE=reconcile_pipeline/engine/merge.py (files, folders or mutmut name
# globs, space-separated); MUTATION_MINUTES=30 stops it then (results are kept in mutants/,
# git-ignored, and the next run resumes); see tools/mutation.py.
MUTMUT_VERSION   ?= 3.8.1
MUTATE           ?=
MUTATION_JOBS    ?= 2
MUTATION_MINUTES ?=

mutation: $(STAMP)
	@$(BIN)/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("mutmut") != "$(MUTMUT_VERSION)")' 2>/dev/null \
		|| $(BIN)/python -m pip install --quiet 'mutmut==$(MUTMUT_VERSION)'
	$(BIN)/python tools/mutation.py run --jobs $(MUTATION_JOBS) \
		$(if $(MUTATION_MINUTES),--minutes $(MUTATION_MINUTES)) $(MUTATE)

db-start: $(STAMP)
	$(BIN)/reconcile db start

db-stop: $(STAMP)
	$(BIN)/reconcile db stop

clean:
	-$(BIN)/reconcile db stop
	rm -rf $(VENV) .reconcile
