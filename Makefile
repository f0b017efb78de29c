# The two commands a newcomer needs: `make run` and `make test`. Both set everything up, and
# both install exactly what uv.lock pins; `make lock` refreshes it on purpose.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# uv installs from the lock; it is itself pinned, in a virtualenv of its own.
UV_VERSION := 0.13.10
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
# Never a Python that uv would download: the machine's own, 3.11 or newer.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Bytecode compiled once at install: every process (servers in tests included) starts fast,
# also where PYTHONDONTWRITEBYTECODE keeps Python from caching it.
export UV_COMPILE_BYTECODE := 1
# --locked: exactly what uv.lock pins, and a lock that no longer matches pyproject.toml is an
# error (run `make lock`), never a silent install of something else.
SYNC   := $(UV) sync --locked --python $(PYTHON)
UV_STAMP := $(TOOLS)/.uv-$(UV_VERSION)

.PHONY: run test test-quick lint format lock bench up down clean

# A stamp per version: changing UV_VERSION installs that uv.
$(UV_STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "chatlens needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	rm -f $(TOOLS)/.uv-*
	touch $@

# `make run` needs no test tools; once `make test` has installed them, it keeps them.
$(VENV)/.installed-run: uv.lock pyproject.toml $(UV_STAMP)
	@if [ -f $(VENV)/.installed-dev ] && [ $(VENV)/.installed-dev -nt uv.lock ]; then :; \
	else $(SYNC) --quiet --no-dev; fi
	touch $@

$(VENV)/.installed-dev: uv.lock pyproject.toml $(UV_STAMP)
	$(SYNC) --quiet
	touch $@ $(VENV)/.installed-run

## Serve on 127.0.0.1:8000 with the builtin bot and an embedded SQLite database
## (./chatlens.db); `make run PORT=8080` (or CHATLENS_PORT) for another port.
# Only a PORT given on make's command line: one inherited from the environment (many
# platforms export PORT) must not override CHATLENS_PORT or .env.
run: $(VENV)/.installed-run
	$(BIN)/chatlens serve $(if $(filter command line,$(origin PORT)),--port $(PORT))

## Lint, type-check and run every test (set CHATLENS_TEST_DATABASE_URL to add PostgreSQL).
test: $(VENV)/.installed-dev lint
	$(BIN)/pytest

## The quick part alone: everything but the tests marked slow (real Prometheus, servers in
## subprocesses, deploy checks).
test-quick: $(VENV)/.installed-dev
	$(BIN)/pytest -m "not slow"

## Refresh uv.lock to the newest versions pyproject.toml allows, install them and run the suite.
lock: $(UV_STAMP)
	$(UV) lock --upgrade --python $(PYTHON)
	$(MAKE) test

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

## Start the service as a user would and measure it (about 25 minutes; `.venv/bin/python -m
## benchmarks --help` lists the parts to run alone with --only); figures: benchmarks/README.md.
bench: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks

# promtail ships the logs to Loki; `make up COMPOSE_PROFILES=clickhouse` uses Vector and
# ClickHouse instead.
COMPOSE_PROFILES ?= promtail
export COMPOSE_PROFILES
COMPOSE := docker compose -f deploy/compose.yaml
SECRETS := deploy/secrets/slack_webhook_url deploy/secrets/smtp_password

$(SECRETS):
	touch $@

## The whole stack in containers (deploy/compose.yaml); `make down` stops it, data stays.
up: | $(SECRETS)
	$(COMPOSE) up -d --build
	@echo
	@echo "chatlens      http://localhost:8000  (API docs: /docs; the admin key, printed on first start:"
	@echo "              $(COMPOSE) logs --no-log-prefix chatlens | grep -oE 'cl_[A-Za-z0-9_-]{43}' | head -1)"
	@echo "Grafana       http://localhost:3000  (dashboards: chatlens / Operational, AI performance, Business, Node health)"
	@echo "Prometheus    http://localhost:9090  (alerts: /alerts)"
	@echo "Alertmanager  http://localhost:9093"
	@echo "Loki          http://localhost:3100  (query it from Grafana's Explore)"
	@echo "Tempo         http://localhost:3200  (traces: from Grafana, or an exemplar on a latency panel)"

# Every profile, so that whichever log shipper `make up` started stops too.
down:
	COMPOSE_PROFILES=promtail,clickhouse $(COMPOSE) down

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
