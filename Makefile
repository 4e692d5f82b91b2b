# fedrelay developer entry points. `make setup` installs everything the others need.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help setup lint test smoke bench demo programs contracts lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup:  ## install every dependency, pinned (Debian, Python, npm, Kafka, helm); idempotent
	@tools/setup.sh

lint: setup  ## ruff, mypy --strict and the layer contracts (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache --no-logo

test: lint contracts  ## setup, lint, the contracts, then the whole test suite (real services included)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as a failure"; exit 1; fi; \
	exit $$rc

smoke: setup  ## one real round-trip per service (anvil+forge, PostgreSQL, Kafka, LiteSVM)
	$(PY) -m pytest -m smoke $(PYTEST_ARGS)

contracts: setup  ## build the Solidity contracts with forge (on solcjs) into contracts/out
	cd contracts && ../tools/npm/node_modules/@foundry-rs/forge-linux-amd64/bin/forge build --offline --use ../tools/solc/solc-forge.cjs

programs: setup  ## build the Solana worker program (C -> BPF -> Solana ELF) into programs/build
	$(PY) programs/build.py

bench: setup  ## run every benchmark; each prints one JSON line
	@bench/run

demo: setup  ## the end-to-end demo on embedded defaults; report in .fedrelay/demo/
	$(VENV)/bin/fedrelay demo

lock:  ## re-pin every Python dependency into requirements.lock from the current .venv
	$(VENV)/bin/pip freeze --exclude-editable > requirements.lock

clean:  ## remove build outputs (keeps installed tools)
	rm -rf contracts/out contracts/cache programs/build .pytest_cache .mypy_cache .ruff_cache
