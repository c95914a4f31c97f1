# `make demo` and `make test` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Three projects: the library, the reference shop and the bench (see DEVELOPERS.md).
PROJECTS := pyproject.toml shop/pyproject.toml bench/pyproject.toml
STAMP := $(VENV)/.installed-$(shell cat $(PROJECTS) | sha1sum | cut -c1-12)
PYTEST_ARGS ?=
# The dashboard: npm ci when the lock file changes, the Vite build (into the admin API's
# static directory) when its sources change. npm writes node_modules/.package-lock.json.
NODE_DEPS := dashboard/node_modules/.package-lock.json
DASHBOARD_BUILD := src/sagakit/api/static/index.html
# The tests' Node.js programs (a participant written from docs/protocol.md, the AsyncAPI
# checks): npm ci when their lock file changes.
FOREIGN_DEPS := tests/foreign/node_modules/.package-lock.json
DASHBOARD_SOURCES := $(shell find dashboard/src dashboard/index.html dashboard/package.json \
	dashboard/tsconfig.json dashboard/vite.config.ts -type f 2>/dev/null)

# The browser tests drive the system Chromium (browsers are not downloaded); `make test`
# installs it when it is missing, with apt-get (as root, or through sudo).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit vitest dashboard setup browser clean

$(STAMP): $(PROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./shop -e ./bench
	rm -f $(VENV)/.installed-*
	touch $@

$(NODE_DEPS): dashboard/package-lock.json
	cd dashboard && npm ci --no-audit --no-fund
	touch $@

$(FOREIGN_DEPS): tests/foreign/package-lock.json
	cd tests/foreign && npm ci --no-audit --no-fund
	touch $@

$(DASHBOARD_BUILD): $(NODE_DEPS) $(DASHBOARD_SOURCES)
	cd dashboard && npm run build
	touch $@

dashboard: $(DASHBOARD_BUILD)

setup: $(STAMP) $(DASHBOARD_BUILD) $(FOREIGN_DEPS)

demo: setup
	$(BIN)/sagakit demo

lint: $(STAMP)
	$(BIN)/ruff check src shop tests bench
	$(BIN)/ruff format --check src shop tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

browser:
	@test -x $(CHROMIUM) || { echo "installing chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

vitest: $(NODE_DEPS)
	cd dashboard && npx vitest run

unit: setup browser
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck vitest unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .sagakit
	rm -rf dashboard/node_modules src/sagakit/api/static tests/foreign/node_modules
