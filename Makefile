# Two entry points from a fresh clone:
#   make run    installs and runs the main job on the embedded default
#   make test   installs everything the tests need and runs them
PYTHON ?= python3
PORT   ?= 4437
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install peers run test lint docs clean

install: $(VENV)/.install-stamp

$(VENV)/.install-stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

peers: peers/node_modules/.package-lock.json

peers/node_modules/.package-lock.json: peers/package.json peers/package-lock.json
	# npm ci refuses this lock file: npm 11 leaves other platforms' optional
	# binaries out of it. install --no-save follows the lock and never rewrites it.
	cd peers && npm install --no-save --no-audit --no-fund --loglevel=error

# The main job: embedded Durable Streams server (SQLite in .dwf/), worker, wake
# handler and the example workflows, all on http://127.0.0.1:$(PORT) (make run PORT=8080).
run: install
	$(BIN)/dwf serve --data .dwf --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install peers lint
	$(BIN)/pytest

docs: install
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) peers/node_modules site
