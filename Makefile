# Tadpole State — the front door. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT_BASE ?= 7100
CLUSTER_DIR ?= .cluster
NODES ?= n1 n2 n3
# Mutual TLS on every port, with a throw-away CA in $(CLUSTER_DIR)/tls/ (TLS=0: plaintext)
TLS ?= 1
PYTEST_ARGS ?=

.PHONY: help venv system-deps proto cluster cluster-stop cluster-status test test-fast test-unit \
	test-integration client check lint typecheck imports coverage clean bench bench-http chaos monitor \
	monitor-stop bench-ab bench-population bench-instrumentation postgres dr-drill bench-backup \
	bench-atrest bench-ledger bench-security

help:
	@echo "make cluster          start a three-node cluster in the background ($(CLUSTER_DIR)/, ports $(PORT_BASE)+1..3)"
	@echo "                      mutual TLS on every port (CA and certificates in $(CLUSTER_DIR)/tls/); TLS=0: plaintext"
	@echo "make cluster-stop     stop it (SIGTERM, then wait)"
	@echo "make cluster-status   its members, through the CLI"
	@echo "make monitor          Prometheus on 127.0.0.1:9090 scraping it, alert rules loaded (monitor-stop)"
	@echo "make test             the whole test suite (runs system-deps first)"
	@echo "make test-fast        unit and scenario tests only: in memory, no processes"
	@echo "make test-unit        unit tests only; make test-integration: real nodes on loopback"
	@echo "make check            lint, typecheck, imports, coverage (each also a target of its own)"
	@echo "                        lint: ruff check + format; typecheck: mypy --strict"
	@echo "                        imports: import-linter layers + no import cycles"
	@echo "                        coverage: >= $(COVERAGE_MIN)% branch coverage of the pure cores"
	@echo "make system-deps      as root: apt-get install what the tests need ($(foreach d,$(SYSTEM_DEPS),$(lastword $(subst :, ,$(d)))))"
	@echo "make proto            regenerate node/pb from proto/"
	@echo "make client           regenerate node/client/_sync.py from node/client/_async.py"
	@echo "make chaos            faults x real cluster, checked (DURATION, FAULTS, SEED, FAILOVER_TRIALS)"
	@echo "make bench            Tadpole (Raft, etcd backend) vs etcd vs raw pysyncobj; BENCH_ARGS=--help"
	@echo "make bench-http       HTTP vs gRPC per request, SSE fan-out (part of make bench)"
	@echo "make bench-ab REF=c   this tree vs commit c (ops/s, CPU, Raft calls, fsyncs per op, idle)"
	@echo "make bench-population Tiers.Update vs UpdateMany batches against make cluster"
	@echo "make bench-instrumentation  instrumentation cost per put, % of its server CPU"
	@echo "make dr-drill         back up a cluster under load, destroy it, restore it, check every write (DRILL_ARGS)"
	@echo "make bench-backup     backup/restore throughput at 100k keys, incremental size (BACKUP_BENCH_ARGS)"
	@echo "make bench-atrest     puts and population updates with encryption at rest off vs on, same run (ATREST_BENCH_ARGS)"
	@echo "make bench-security   put/get with mutual TLS and roles off vs on, same run (SECURITY_BENCH_ARGS)"
	@echo "make bench-ledger     AssignJob -> PostgreSQL throughput and export lag vs direct inserts (LEDGER_BENCH_ARGS)"
	@echo "make postgres         start this machine's PostgreSQL with the ledger tests' database (make test runs it)"
	@echo "make venv / clean     create $(VENV) from constraints.txt / remove it and all caches"

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
	@$(PY) -m node.dev.cluster start --base-port $(PORT_BASE) --dir $(CLUSTER_DIR) \
		$(if $(filter-out 0,$(TLS)),--tls,--no-tls) $(NODES)

cluster-stop:
	@if test -x $(PY); then $(PY) -m node.dev.cluster stop --dir $(CLUSTER_DIR); else echo "no venv, nothing to stop"; fi

cluster-status: venv
	@$(VENV)/bin/tadpole --endpoints $$($(PY) -m node.dev.cluster endpoints --dir $(CLUSTER_DIR)) members

# A local Prometheus for `make cluster`: deploy/prometheus/prometheus.yml made for its
# ports and certificates (node.dev.cluster prometheus), with deploy/prometheus/rules.yml;
# configuration and data under $(CLUSTER_DIR)/prometheus.
PROMETHEUS_LISTEN ?= 127.0.0.1:9090
monitor: system-deps venv
	@test -f $(CLUSTER_DIR)/cluster.json || { echo "no cluster in $(CLUSTER_DIR): make cluster first"; exit 1; }
	@mkdir -p $(CLUSTER_DIR)/prometheus
	@$(PY) -m node.dev.cluster prometheus --dir $(CLUSTER_DIR) > $(CLUSTER_DIR)/prometheus/prometheus.yml
	@if [ -f $(CLUSTER_DIR)/prometheus/pid ] && kill -0 $$(cat $(CLUSTER_DIR)/prometheus/pid) 2>/dev/null; then \
		echo "Prometheus already running (pid $$(cat $(CLUSTER_DIR)/prometheus/pid))"; exit 0; fi; \
	prometheus --config.file=$(CLUSTER_DIR)/prometheus/prometheus.yml \
		--storage.tsdb.path=$(CLUSTER_DIR)/prometheus/data --web.listen-address=$(PROMETHEUS_LISTEN) \
		> $(CLUSTER_DIR)/prometheus/prometheus.log 2>&1 & echo $$! > $(CLUSTER_DIR)/prometheus/pid; \
	for i in $$(seq 50); do curl -sf http://$(PROMETHEUS_LISTEN)/-/ready >/dev/null && break; sleep 0.2; done; \
	curl -sf http://$(PROMETHEUS_LISTEN)/-/ready >/dev/null \
		|| { echo "Prometheus did not start; see $(CLUSTER_DIR)/prometheus/prometheus.log"; exit 1; }; \
	echo "Prometheus http://$(PROMETHEUS_LISTEN)  alerts http://$(PROMETHEUS_LISTEN)/alerts  (make monitor-stop)"; \
	$(PY) -m node.dev.cluster console --dir $(CLUSTER_DIR)

monitor-stop:
	@if [ -f $(CLUSTER_DIR)/prometheus/pid ]; then kill $$(cat $(CLUSTER_DIR)/prometheus/pid) 2>/dev/null; \
		rm -f $(CLUSTER_DIR)/prometheus/pid; echo "Prometheus stopped"; else echo "no Prometheus running"; fi

# System packages the tests use, as command:debian-package; this is the only list.
#   etcd      etcd-server  the etcd backend tests (tests/integration/test_etcd_backend.py)
#   nft, ip   nftables, iproute2  chaos partitions inside network namespaces
#   faketime  faketime     the chaos clock-skew fault (libfaketime)
#   promtool  prometheus   alert rules checked and unit-tested, and a real Prometheus
#                          scraping a real cluster (tests/integration/test_prometheus.py)
#   systemd-analyze  systemd  verifies deploy/systemd/tadpole.service
#   chromium, chromedriver   the web console in a real headless browser
#                          (tests/integration/test_console.py)
#   pg_ctlcluster  postgresql  the ledger on a real PostgreSQL (tests/integration/test_ledger.py;
#                          `make postgres` starts it and makes the test database)
#   age       age          a backup chunk opens with the real age tool (tests/unit/node/backup)
SYSTEM_DEPS := etcd:etcd-server nft:nftables ip:iproute2 faketime:faketime promtool:prometheus \
	systemd-analyze:systemd chromium:chromium chromedriver:chromium-driver \
	pg_ctlcluster:postgresql age:age

# Prints the packages whose command is neither on PATH nor in a system bin directory
# (a non-root PATH often lacks /usr/sbin, where nft and ip live).
MISSING_SYSTEM_DEPS = for dep in $(SYSTEM_DEPS); do cmd=$${dep%%:*}; \
	command -v $$cmd >/dev/null 2>&1 || [ -x /usr/bin/$$cmd ] || [ -x /usr/sbin/$$cmd ] \
	|| [ -x /sbin/$$cmd ] || echo $${dep\#*:}; done

# Nothing runs when everything is there. As root, apt-get installs what is missing;
# otherwise it is named. Under CI (CI set, not "false") anything still missing fails
# here, so no test that needs it is skipped instead.
system-deps:
	@missing="$$($(MISSING_SYSTEM_DEPS))"; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "== apt-get install" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		missing="$$($(MISSING_SYSTEM_DEPS))"; \
		[ -z "$$missing" ] && exit 0; \
		echo "system-deps: still missing after apt-get:" $$missing; \
	else \
		echo "system-deps: missing" $$missing "- the tests that need them will be skipped;" \
			"install them as root with: make system-deps (apt-get install" $$missing")"; \
	fi; \
	if [ -n "$$CI" ] && [ "$$CI" != false ]; then \
		echo "system-deps: CI must run every test; failing instead of skipping" >&2; exit 1; \
	fi

# The machine's PostgreSQL, started, with the ledger tests' role and database.
postgres: system-deps
	@scripts/test-postgres.sh

test: venv system-deps postgres
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Unit and scenario tests (in memory, no processes), on both cores: about 65 s of CPU.
test-fast: venv
	$(PY) -m pytest -q -n 2 tests/unit tests/scenarios $(PYTEST_ARGS)

# Regenerate the blocking client (node/client/_sync.py) from the asyncio source.
client: venv
	$(PY) -m node.client.unasync

test-unit: venv
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

test-integration: venv system-deps postgres
	$(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

# Chaos: one run per fault of DURATION s (FAULTS=all or a comma list), plus a
# kill-leader run of FAILOVER_TRIALS kills for the failover figures. Needs root for
# namespaces/nftables (else partitions are skipped and reported). SEED= repeats a run.
DURATION ?= 60
FAULTS ?= all
SEED ?=
CHAOS_NODES ?= 3
FAILOVER_TRIALS ?= 20
chaos: venv system-deps
	$(PY) -m tests.chaos.runner --per-fault --duration $(DURATION) --faults $(FAULTS) \
		--nodes $(CHAOS_NODES) --failover-trials $(FAILOVER_TRIALS) $(if $(SEED),--seed $(SEED))

check: lint typecheck imports coverage

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

# Layer contracts ([tool.importlinter] in pyproject.toml), then no import cycles.
imports: venv
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(PY) tests/import_contract.py

# Branch coverage of the pure cores by their own unit tests; each part must reach
# COVERAGE_MIN. A part under it gets its missing lines printed.
COVERAGE_MIN ?= 90
COVERAGE_DATA := $(VENV)/coverage-gate.data
COVERED := crdt gossip consensus/statemachine.py node/tiers
COVERAGE_TESTS := tests/unit/crdt tests/unit/gossip tests/unit/consensus/test_statemachine.py \
	tests/unit/node/tiers
# Exit 1 if any part is under COVERAGE_MIN, after printing its missing lines.
COVERAGE_GATE = fail=0; for part in $(COVERED); do \
	if [ -d "$$part" ]; then include="$$part/*"; else include="$$part"; fi; \
	report() { $(PY) -m coverage report --data-file=$(COVERAGE_DATA) --include="$$include" \
		--precision=1 "$$@"; }; \
	total="$$(report --format=total 2>/dev/null | head -1)"; \
	if report --format=total --fail-under=$(COVERAGE_MIN) >/dev/null 2>&1; then \
		printf 'branch coverage %-26s %5s%%\n' "$$part" "$$total"; \
	else \
		fail=1; report --show-missing --skip-covered; \
		printf 'branch coverage %-26s %5s%%  UNDER %s%%\n\n' "$$part" "$$total" $(COVERAGE_MIN); \
	fi; \
	done; exit $$fail

coverage: venv
	$(PY) -m coverage run --branch --data-file=$(COVERAGE_DATA) -m pytest -q $(COVERAGE_TESTS)
	@$(COVERAGE_GATE)

BENCH_ARGS ?=

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,bench]'
	@touch $@

# The system tier against etcd, population updates, CPU, peer RPCs, fsyncs, idle CPU and
# memory, with this tree's puts beside those of BENCH_REF (the commit before issue 11's
# work; BENCH_REF= skips it), medians of 3 fresh-cluster repetitions: ~22 minutes.
BENCH_REF ?= fbc8b1d
bench: $(VENV)/.bench-installed
	@if [ -n "$(BENCH_REF)" ]; then ref=$$(git rev-parse --short $(BENCH_REF)) && \
	dir=$${TMPDIR:-/tmp}/tadpole-ref-$$ref && \
	if [ ! -d $$dir ]; then git worktree add -f --detach $$dir $$ref >/dev/null; fi && \
	echo "reference: $$ref in $$dir"; fi; \
	$(PY) bench/run.py $${dir:+--ref $$dir} $(BENCH_ARGS)
	$(PY) bench/http_bench.py $(HTTP_BENCH_ARGS)

# The HTTP face against gRPC, and SSE fan-out (also the last part of `make bench`).
bench-http: venv
	$(PY) bench/http_bench.py $(HTTP_BENCH_ARGS)

# This tree's system tier against commit $(REF), alternating fresh clusters in one run
# (a worktree of REF is made in $TMPDIR, default /tmp, as tadpole-ref-<commit>).
REF ?= HEAD~1
AB_ARGS ?=
bench-ab: venv
	@ref=$$(git rev-parse --short $(REF)) && dir=$${TMPDIR:-/tmp}/tadpole-ref-$$ref && \
	if [ ! -d $$dir ]; then git worktree add -f --detach $$dir $$ref >/dev/null; fi && \
	$(PY) bench/ab.py --ref $$dir $(AB_ARGS)

# Population updates one per call and in UpdateMany batches, against `make cluster`.
POPULATION_ARGS ?=
bench-population: venv
	$(PY) bench/population_bench.py $(POPULATION_ARGS)

# What /metrics instrumentation costs per put, as a share of the put's server CPU.
INSTRUMENTATION_ARGS ?=
bench-instrumentation: venv
	$(PY) bench/instrumentation_cost.py $(INSTRUMENTATION_ARGS)

# Disaster recovery, rehearsed: docs/backup.md. Prints the recovery time.
DRILL_ARGS ?= --preload 20000
dr-drill: venv
	$(PY) -m node.dev.drill $(DRILL_ARGS)

# Backup and restore throughput, incremental size after 1% of keys change.
BACKUP_BENCH_ARGS ?=
bench-backup: venv
	$(PY) bench/backup_bench.py $(BACKUP_BENCH_ARGS)

bench-atrest: venv
	$(PY) bench/atrest_bench.py $(ATREST_BENCH_ARGS)

# System-tier put and get, plaintext without roles vs mutual TLS with roles enabled.
bench-security: venv
	$(PY) bench/security_bench.py $(SECURITY_BENCH_ARGS)

# AssignJob -> row in PostgreSQL (throughput, export lag) beside direct inserts.
bench-ledger: venv postgres
	$(PY) bench/ledger_bench.py $(LEDGER_BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CLUSTER_DIR) .pytest_cache .mypy_cache .ruff_cache *.egg-info
