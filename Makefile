# Two commands on a fresh machine (Python >= 3.11 and make):
#   make run    set up, then open the control room on the demo organisation (sim provider, no key)
#   make test   set up, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-faults bench bench-quick lint lock setup system-deps clean

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

# The `shell` tool runs commands under bubblewrap (Debian's `bubblewrap`); installed with
# apt-get only when `bwrap` is missing (CI runs as root on Debian; elsewhere use sudo).
system-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  echo "installing bubblewrap (the sandbox of the shell tool)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq bubblewrap; }

run: $(STAMP) system-deps
	$(BIN)/lemming

test: $(STAMP) system-deps
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

test-faults: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -m slow -o addopts=""

bench: $(STAMP)
	$(BIN)/lemming bench

bench-quick: $(STAMP)
	$(BIN)/lemming bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .lemming
