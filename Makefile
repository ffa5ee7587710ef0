# Tadpole State — the front door. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT_BASE ?= 7100
CLUSTER_DIR ?= .cluster
NODES ?= n1 n2 n3
PYTEST_ARGS ?=

.PHONY: help venv proto cluster cluster-stop cluster-status test test-unit test-integration check lint typecheck imports clean bench chaos

help:
	@echo "make cluster        start a three-node cluster in the background ($(CLUSTER_DIR)/, ports $(PORT_BASE)+1..3)"
	@echo "make cluster-stop   stop it (SIGTERM, then wait)"
	@echo "make test           run the whole test suite"
	@echo "make check          ruff, mypy --strict, import-linter layers, no import cycles"
	@echo "make proto          regenerate node/pb from proto/"
	@echo "make chaos          faults x real cluster, checked (DURATION, FAULTS, SEED, FAILOVER_TRIALS)"
	@echo "make bench          Tadpole (Raft, etcd backend) vs etcd vs raw pysyncobj; BENCH_ARGS=--help"

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

proto: venv
	$(PY) -m grpc_tools.protoc -Inode/pb=proto --python_out=. --pyi_out=. --grpc_python_out=. proto/tadpole.proto
	@echo "regenerated node/pb/tadpole_pb2*.py"

cluster: venv
	@$(PY) -m node.dev.cluster start --base-port $(PORT_BASE) --dir $(CLUSTER_DIR) $(NODES)

cluster-stop:
	@if test -x $(PY); then $(PY) -m node.dev.cluster stop --dir $(CLUSTER_DIR); else echo "no venv, nothing to stop"; fi

cluster-status: venv
	@$(VENV)/bin/tadpole --endpoints $$($(PY) -m node.dev.cluster endpoints --dir $(CLUSTER_DIR)) members

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

test-integration: venv
	$(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

# Chaos: one run per fault of DURATION s (FAULTS=all or a comma list), plus a
# kill-leader run of FAILOVER_TRIALS kills for the failover figures. Needs root for
# namespaces/nftables (else partitions are skipped and reported). SEED= repeats a run.
DURATION ?= 60
FAULTS ?= all
SEED ?=
CHAOS_NODES ?= 3
FAILOVER_TRIALS ?= 20
chaos: venv
	$(PY) -m tests.chaos.runner --per-fault --duration $(DURATION) --faults $(FAULTS) \
		--nodes $(CHAOS_NODES) --failover-trials $(FAILOVER_TRIALS) $(if $(SEED),--seed $(SEED))

check: lint typecheck imports

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

# Layer contracts ([tool.importlinter] in pyproject.toml), then no import cycles.
imports: venv
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(PY) tests/import_contract.py

BENCH_ARGS ?=

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,bench]'
	@touch $@

bench: $(VENV)/.bench-installed
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CLUSTER_DIR) .pytest_cache .mypy_cache .ruff_cache *.egg-info
