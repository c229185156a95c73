# finscore: the two commands a newcomer runs.
#   make demo   set up everything and run the whole system on the embedded broker
#   make test   set up everything and run the test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Python >= 3.11; prefer 3.11 (the local CPU torch build is for it).
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
DEMO_ARGS ?=
TEST_ARGS ?=

.PHONY: setup demo test lint bench clean kafka kafka-fetch registry-fetch

setup: $(VENV)/.installed kafka-fetch registry-fetch

# Apache Kafka 4.4's jars (the second test backend, `make kafka`), fetched once with Maven into
# .cache/kafka/lib; without Java 17+ or Maven this prints a note and those tests are skipped.
kafka-fetch:
	@bash scripts/kafka/fetch.sh

# A real schema registry for the tests (Apicurio Registry 2.4.2, Confluent-compatible API, in
# memory), built once with Maven into .cache/registry/app; without Java 17+ or Maven this prints a
# note and the registry tests are skipped.
registry-fetch:
	@bash scripts/registry/fetch.sh .cache/registry

# One Apache Kafka 4.4 broker (KRaft, broker+controller, data in a temp dir) in the foreground on
# FINSCORE_BROKER_PORT (default 9092); KAFKA_ARGS='--nodes 3' starts a 3-node cluster instead.
KAFKA_ARGS ?=
kafka: setup
	$(PY) scripts/kafka/serve.py $(KAFKA_ARGS)

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "finscore needs Python >= 3.11 on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[compress,bench,dev]'
	@bash scripts/ensure-chromium.sh || echo "chromium not installed: the browser test will be skipped"
	@bash scripts/ensure-tools.sh
	@touch $@

demo: setup
	$(VENV)/bin/finscore demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest $(TEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy finscore streams schemas compression

bench: setup
	$(VENV)/bin/finscore bench

clean:
	rm -rf $(VENV) build *.egg-info var reports .cache/kafka .cache/registry
