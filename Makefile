# repotalk — run, develop, test, validate, benchmark.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REPO ?= .
REPO_NAME ?= $(notdir $(abspath $(REPO)))
PORT ?= 8000
# Distributed mode against the local services (make dev-local, bench).
DEV_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/repotalk_dev
DEV_BROKER_URL ?= redis://127.0.0.1:6379/0

.PHONY: help install run dev-local dev stop logs test test-fast lint typecheck validate bench bench-webhook \
	bench-load bench-faults bench-search bench-retrieval bench-ai bench-celery-floor bench-hotpaths bench-tracing bench-tracing-in-run clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(BIN)/repotalk: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

install: $(BIN)/repotalk ## Create .venv and install repotalk with its development tools

run: install ## Embedded: index $(REPO) and serve on $(PORT) (SQLite, in-process workers, no keys)
	$(BIN)/repotalk index $(REPO) --name $(REPO_NAME)
	PORT=$(PORT) $(BIN)/repotalk serve

dev-local: install ## Distributed: gateway + one worker per service as processes, local Redis and Postgres
	DATABASE_URL=$(DEV_DATABASE_URL) BROKER_URL=$(DEV_BROKER_URL) PORT=$(PORT) \
	  $(BIN)/python -m repotalk.devlocal --repo $(REPO) --name $(REPO_NAME)

# The core stack and its observability layer (OTel collector, Jaeger, Prometheus, Grafana).
COMPOSE ?= docker compose -f docker-compose.yml -f docker-compose.observability.yml
# checkov pins packaging<24, which pytest and kombu[redis] cannot share: it lives in its own venv.
CHECKOV_VERSION ?= 3.3.30
CHECKOV := $(VENV)/checkov/bin/checkov

dev: ## The whole stack in containers with Jaeger (:16686), Prometheus (:9090), Grafana (:3000); needs Docker
	$(COMPOSE) up -d --build --wait

stop: ## Stop the containers (volumes are kept; `docker compose down -v` drops them)
	$(COMPOSE) down

logs: ## Follow one container's logs: make logs service=gateway (all of them without service=)
	$(COMPOSE) logs -f --tail=200 $(service)

test: install ## Every test (real Redis and Postgres must be running)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

test-fast: install ## Tests without the multi-process ones
	$(BIN)/pytest -q -m "not distributed"

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

validate: install $(CHECKOV) ## Validate deployment files offline: compose, kustomize overlays, Terraform, checkov, yamllint
	$(BIN)/python deploy/validate.py --checkov $(CHECKOV)

$(CHECKOV):
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install -q checkov==$(CHECKOV_VERSION)

bench: bench-webhook bench-load bench-faults bench-search bench-retrieval bench-ai bench-celery-floor bench-hotpaths bench-tracing bench-tracing-in-run ## Every benchmark

bench-webhook: install ## Signed webhooks through the distributed stack: msgs/s, ack and end-to-end latency
	$(BIN)/python bench/webhook.py

bench-load: install ## bench-webhook held for minutes: sustained msgs/s, latency, RSS trend of every process
	$(BIN)/python bench/load.py

bench-faults: install ## Faults under load: each worker killed, Redis and Postgres restarted, the LLM failing/slow
	$(BIN)/python bench/faults.py

bench-search: install ## Index and query a ~1M-line corpus of PyPI sdists beside ripgrep
	$(BIN)/python bench/search.py

bench-retrieval: install ## Recall@k and MRR of a question set on SQLAlchemy, beside BM25 over whole files
	$(BIN)/python bench/retrieval.py

bench-ai: install ## The AI engine's own overhead per turn and the cost of a fallback
	$(BIN)/python bench/ai.py

bench-tracing: install ## Throughput cost of tracing: bench-webhook alternating off, as shipped and every turn
	$(BIN)/python bench/tracing_cost.py --sampled-out

bench-tracing-in-run: install ## CPU of a traced turn's spans, beside untraced turns of the same run
	$(BIN)/python bench/tracing_in_run.py

bench-celery-floor: install ## CPU of one event hop through Celery with a no-op handler, beside bare Redis
	$(BIN)/python bench/celery_floor.py

bench-hotpaths: install ## CPU per event of each service's handlers, beside the previous implementation
	$(BIN)/python bench/hotpath_processor.py
	$(BIN)/python bench/hotpath_analytics.py
	$(BIN)/python bench/hotpath_gateway.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
