# Two commands on a fresh machine (Python >= 3.11 and make):
#   make run    set up, then open the control room on the demo organisation (sim provider, no key)
#   make test   set up, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-faults bench bench-quick lint lock setup clean

setup: $(STAMP)

# Installs exactly what requirements.lock pins (hash-checked), then the project itself.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Re-resolve the lock after changing pyproject.toml's dependencies (needs the network).
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra serve --python-version 3.11 --universal --generate-hashes --quiet -o requirements.lock

run: $(STAMP)
	$(BIN)/lemming

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

test-faults: $(STAMP)
	$(BIN)/python -m pytest -q -m slow -o addopts=""

bench: $(STAMP)
	$(BIN)/lemming bench

bench-quick: $(STAMP)
	$(BIN)/lemming bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .lemming
