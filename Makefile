# Two entry points from a fresh clone:
#   make run    installs and runs the main job on the embedded default
#   make test   installs everything the tests need and runs them
PYTHON ?= python3
PORT   ?= 4437
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install peers system-deps run test lint docs clean ui ts-test bench-peers-venv bench-peers bench-smoke

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

# Debian packages the tests start for real: nginx (the reverse-proxy recipe in
# deploy/), chromium (browser tests), curl (HTTP/2 clients). Installed only when missing.
SYSTEM_DEPS := nginx chromium curl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

system-deps:
	@missing=""; for p in $(SYSTEM_DEPS); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends$$missing >/dev/null; \
	fi

# The browser side: the TypeScript packages (clients/typescript, one npm workspace:
# @durable-workflows/client and @durable-workflows/react) and the example web app
# (examples/web, built to examples/web/dist with Vite). The app installs the packages
# as published copies (install-links), so it is reinstalled when they are rebuilt.
TS_DIR  := clients/typescript
WEB_DIR := examples/web
TS_SRC  := $(shell find $(TS_DIR)/packages $(TS_DIR)/scripts -type f -not -path '*/node_modules/*' \
             -not -path '*/dist/*' -not -path '*/generated/*' 2>/dev/null) \
           $(wildcard $(TS_DIR)/tsconfig*.json schemas/v1/*.json schemas/v1/defs/*.json)
WEB_SRC := $(shell find $(WEB_DIR)/src -type f 2>/dev/null) \
           $(wildcard $(addprefix $(WEB_DIR)/,index.html vite.config.ts tsconfig.json))

ui: $(WEB_DIR)/dist/index.html

$(TS_DIR)/node_modules/.package-lock.json: $(wildcard $(TS_DIR)/package*.json $(TS_DIR)/packages/*/package.json)
	cd $(TS_DIR) && npm ci --no-audit --no-fund --loglevel=error

$(TS_DIR)/packages/react/dist/index.js: $(TS_DIR)/node_modules/.package-lock.json $(TS_SRC)
	cd $(TS_DIR) && npm run --silent build

$(WEB_DIR)/node_modules/.package-lock.json: $(wildcard $(WEB_DIR)/package*.json) \
    $(TS_DIR)/packages/react/dist/index.js
	cd $(WEB_DIR) && npm ci --no-audit --no-fund --loglevel=error

$(WEB_DIR)/dist/index.html: $(WEB_DIR)/node_modules/.package-lock.json $(WEB_SRC)
	cd $(WEB_DIR) && npm run --silent build

# Strict type checks (the packages, the row-type test, the tests) and the vitest suite,
# which starts a real `dwf serve --memory`.
ts-test: install ui
	cd $(TS_DIR) && npm run --silent typecheck && npm test

# The main job: embedded Durable Streams server (SQLite in .dwf/), worker, wake
# handler, the example workflows and the example web app (examples/web/dist at /),
# all on http://127.0.0.1:$(PORT) (make run PORT=8080).
run: install ui
	$(BIN)/dwf serve --data .dwf --port $(PORT) --ui $(WEB_DIR)/dist

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install peers system-deps lint ui ts-test bench-smoke
	$(BIN)/pytest

docs: install
	$(BIN)/mkdocs build --strict

# Workflow engines side by side (docs/benchmarks.md): DBOS, Temporal (dev server from
# PyPI) and matplotlib in a virtual environment of their own, never in $(VENV); strace
# (Debian) counts fsyncs. bench-peers is the full run (about 15 min on 2 CPUs), bench-smoke
# one tiny round of every workload on every engine (about 90 s).
PEER_VENV := benchmarks/.peer-venv

bench-peers-venv: $(PEER_VENV)/.install-stamp

$(PEER_VENV)/.install-stamp: benchmarks/peers/requirements.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet --upgrade pip
	$(PEER_VENV)/bin/pip install --quiet -r benchmarks/peers/requirements.txt
	@command -v strace >/dev/null 2>&1 || { echo "installing Debian package: strace"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends strace >/dev/null; }
	touch $@

bench-peers: install bench-peers-venv
	$(BIN)/python benchmarks/workflow_bench.py

bench-smoke: install bench-peers-venv
	$(BIN)/python benchmarks/workflow_bench.py --smoke

clean:
	rm -rf $(VENV) $(PEER_VENV) peers/node_modules site
	rm -rf $(TS_DIR)/node_modules $(TS_DIR)/packages/*/dist $(TS_DIR)/packages/client/src/generated \
	  $(WEB_DIR)/node_modules $(WEB_DIR)/dist
