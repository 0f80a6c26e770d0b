# meterline — run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_PORT ?= 9092
PYTEST_ARGS ?=
BENCH_ARGS ?=
DEMO_ARGS ?=
CHAOS_SECONDS ?= 300
CHAOS_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The native usage engine (native/, Rust): built with cargo through maturin into the
# virtualenv, again only when its sources change (cargo's cache is native/target). Without
# cargo the install goes on and the worker uses the Python engine (METERLINE_ENGINE=auto).
CARGO ?= cargo
NATIVE_SOURCES := $(wildcard native/src/*.rs) native/Cargo.toml native/Cargo.lock native/pyproject.toml
NATIVE_TARGET := $(abspath native/target)

$(BIN)/.native: $(BIN)/.installed $(NATIVE_SOURCES)
	@if command -v $(CARGO) >/dev/null 2>&1; then \
		echo "building the native usage engine (cargo, maturin)"; \
		VIRTUAL_ENV=$(abspath $(VENV)) CARGO_TARGET_DIR=$(NATIVE_TARGET) \
			$(BIN)/maturin develop --release --quiet -m native/Cargo.toml && touch $@; \
	else \
		echo "cargo is not on PATH: the Python usage engine will be used" \
			"(install Rust, then run make install again, for the native one)"; \
	fi

install: $(BIN)/.installed $(BIN)/.native ## Create the virtualenv, install meterline and its dev tools, build the native engine

kafka-fetch: install ## Fetch the Apache Kafka broker jars with Maven (cached)
	$(BIN)/meterline kafka fetch

demo: install kafka-fetch ## The main job on a local Kafka and the Stripe simulator (DEMO_ARGS=--keep keeps it up)
	$(BIN)/meterline demo --port $(DEMO_PORT) $(DEMO_ARGS)

chaos: install kafka-fetch ## Kill workers, sinks, edges and the broker under load for CHAOS_SECONDS (300), then check nothing was lost or charged twice; report in .meterline/chaos/
	$(BIN)/meterline chaos --duration $(CHAOS_SECONDS) $(CHAOS_ARGS)

browser: ## Install Debian's chromium (the console's browser test) when it is missing
	@command -v chromium >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium chromium-driver; }

test: install kafka-fetch browser ## Run every test (the native engine's cargo tests, unit, integration on a real broker, end to end)
	@if command -v $(CARGO) >/dev/null 2>&1; then \
		CARGO_TARGET_DIR=$(NATIVE_TARGET) $(CARGO) test --quiet --manifest-path native/Cargo.toml; \
	fi
	$(BIN)/pytest $(PYTEST_ARGS)

durability: install kafka-fetch ## Run the usage durability tests (worker SIGKILLs, broker restarts under full load)
	$(BIN)/pytest -m durability tests/integration/test_usage_durability.py $(PYTEST_ARGS)

unit: install ## Run the unit tests only (no broker)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

check: install ## Lint and type-check (ruff, ruff format, mypy strict on streams/ connectors/ tests/ bench/)
	$(BIN)/ruff check streams connectors tests bench
	$(BIN)/ruff format --check streams connectors tests bench
	$(BIN)/mypy streams connectors tests bench

format: install ## Format the code
	$(BIN)/ruff format streams connectors tests bench
	$(BIN)/ruff check --fix streams connectors tests bench

bench: install kafka-fetch ## Run the benchmarks (bench/), print a table, write bench/results/ (BENCH_ARGS=--quick: a few minutes)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

dev: install kafka-fetch ## Start Kafka, topics and every process; Ctrl-C stops them
	$(BIN)/meterline dev

clean: ## Remove local state (broker data, worker data); keeps the Kafka jar cache
	rm -rf .meterline

.PHONY: help install kafka-fetch browser demo chaos test durability unit check format bench dev clean
