# The two commands a newcomer needs: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint format bench up down clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "chatlens needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

## Serve on 127.0.0.1:8000 with the builtin bot and an embedded SQLite database (./chatlens.db).
run: $(VENV)/.installed-run
	$(BIN)/chatlens serve

## Lint, type-check and run the tests (set CHATLENS_TEST_DATABASE_URL to add PostgreSQL).
test: $(VENV)/.installed-dev lint
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

## Start the service as a user would and measure it; figures go to benchmarks/README.md.
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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
