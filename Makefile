# meterline — run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_PORT ?= 9092
PYTEST_ARGS ?=
DEMO_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## Create the virtualenv and install meterline with its dev tools

kafka-fetch: install ## Fetch the Apache Kafka broker jars with Maven (cached)
	$(BIN)/meterline kafka fetch

demo: install kafka-fetch ## The main job on a local Kafka and the Stripe simulator (DEMO_ARGS=--keep keeps it up)
	$(BIN)/meterline demo --port $(DEMO_PORT) $(DEMO_ARGS)

browser: ## Install Debian's chromium (the console's browser test) when it is missing
	@command -v chromium >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium chromium-driver; }

test: install kafka-fetch browser ## Run every test (unit, integration on a real broker, end to end)
	$(BIN)/pytest $(PYTEST_ARGS)

unit: install ## Run the unit tests only (no broker)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

check: install ## Lint and type-check (ruff, ruff format, mypy strict on streams/ connectors/ tests/ bench/)
	$(BIN)/ruff check streams connectors tests bench
	$(BIN)/ruff format --check streams connectors tests bench
	$(BIN)/mypy streams connectors tests bench

format: install ## Format the code
	$(BIN)/ruff format streams connectors tests bench
	$(BIN)/ruff check --fix streams connectors tests bench

bench: install kafka-fetch ## Run the benchmarks (bench/), print a table, write bench/results/
	$(BIN)/python -m bench.run

dev: install kafka-fetch ## Start Kafka, topics and every process; Ctrl-C stops them
	$(BIN)/meterline dev

clean: ## Remove local state (broker data, worker data); keeps the Kafka jar cache
	rm -rf .meterline

.PHONY: help install kafka-fetch browser demo test unit check format bench dev clean
