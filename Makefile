# b2bdwh: everything a DBA or developer runs, from a fresh clone.
#   make demo   the main job on built-in data: initial load, CRM changes, incremental
#               update (both through Airflow), then the HTML report
#   make test   the whole test suite (pytest, pgTAP included), then the suites that also
#               run on Citus (make test-citus: skipped, saying so, where Citus is not installed)
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLUSTER := bash db/cluster.sh
# Every recipe line that talks to the database runs with the cluster's settings.
WITH_ENV := eval "$$($(CLUSTER) env)" &&
SCALE ?= 1
CHANGES ?= 300
REPORT ?= build/report.html
# pip warns about every index folder that this machine's pip.conf names but lacks.
PIP_FILTER := { grep -v "^WARNING: Location 'file:" || true; }

PASSWORDS := simple_auth_manager_passwords.json.generated

.PHONY: help venv up down env status migrate demo report test tools lint lock clean airflow bench soak \
	citus test-citus

help:
	@echo "make demo     cluster up, migrate, source at scale $(SCALE), initial load and, after $(CHANGES)"
	@echo "             simulated CRM changes, incremental update, both through Airflow; then the report"
	@echo "make test     run the test suite (pytest with pgTAP), then make test-citus"
	@echo "make report   the HTML report (charts of sales and data health) in $(REPORT)"
	@echo "make lint     sqlfluff over migrations/ and procedures/, ruff over Python"
	@echo "make bench    benchmarks (SCALE=100 by default), table in bench/out/ (not part of make test)"
	@echo "make soak     CRM writers and incremental updates for SOAK_SECONDS (300) at SCALE=5 by default:"
	@echo "             lost changes (must be 0), lag, changes/s; bench/out/soak.md (not part of make test)"
	@echo "make citus    the warehouse distributed on a local Citus cluster (a coordinator and two"
	@echo "             workers); CITUS_SRC=<citus source tree> builds Citus first where it is missing"
	@echo "make test-citus  the pipeline, incremental, concurrency and validation suites on that cluster"
	@echo "make up/down  start/stop the project-local PostgreSQL cluster (and the Citus one)"
	@echo "make migrate  apply migrations and procedures to both databases"
	@echo "make airflow  Airflow standalone (UI on http://127.0.0.1:8080, AIRFLOW_PORT=...) with dags/"
	@echo "             and both connections; user admin, password in .airflow/$(PASSWORDS)"
	@echo 'eval "$$(make -s env)"  export PGHOST, PGPORT, PGUSER, B2B_OLTP_DSN, B2B_OLAP_DSN'

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (first time: a few minutes)"
	@$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock 2>&1 | $(PIP_FILTER)
	@$(BIN)/pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | $(PIP_FILTER)
	@touch $(STAMP)

venv: $(STAMP)

# db/cluster.sh up installs pgTAP (when root and missing) before it starts the server.
up:
	@$(CLUSTER) up

down:
	@$(CLUSTER) down
	@if [ -d .citus ]; then bash db/citus.sh down; fi

env:
	@$(CLUSTER) env

status:
	@$(CLUSTER) status

migrate: venv up
	@$(WITH_ENV) $(BIN)/b2bdwh migrate

demo: migrate
	@$(WITH_ENV) $(BIN)/b2bdwh generate --scale $(SCALE)
	@$(WITH_ENV) $(BIN)/b2bdwh airflow test dwh_initial_load
	@$(WITH_ENV) $(BIN)/b2bdwh summary
	@echo; echo "The CRM keeps working: $(CHANGES) changes, then the incremental update."
	@$(WITH_ENV) $(BIN)/b2bdwh simulate --changes $(CHANGES)
	@$(WITH_ENV) $(BIN)/b2bdwh airflow test dwh_incremental_update
	@$(WITH_ENV) $(BIN)/b2bdwh summary
	@echo; $(WITH_ENV) $(BIN)/b2bdwh report --out $(REPORT)

# The charts of the warehouse as it is now, in one HTML file that opens offline.
report: venv up
	@$(WITH_ENV) $(BIN)/b2bdwh report --out $(REPORT)

# Airflow UI on http://127.0.0.1:$(AIRFLOW_PORT): user admin, password in
# .airflow/simple_auth_manager_passwords.json.generated (tests/test_airflow_ui.py runs the same
# command with its own AIRFLOW_HOME and port).
AIRFLOW_PORT ?= 8080
airflow: migrate
	@$(WITH_ENV) exec $(BIN)/b2bdwh airflow serve --port $(AIRFLOW_PORT)

# Tools first, cluster after: installing a package (pgTAP) can upgrade the server's
# binaries, which must not happen under a running server (db/cluster.sh up restarts one
# whose binary changed). `up` is a recipe line, not a prerequisite, so that no make -j
# reorders it before `tools`.
test: venv tools
	@$(CLUSTER) up
	@$(WITH_ENV) $(BIN)/pytest $(PYTEST_ARGS)
	@$(CITUS_TESTS_RUN)

# The warehouse on Citus (docs/scaling.md): db/citus.sh builds Citus from CITUS_SRC when it
# is not installed (Citus is in no package registry; v13.2.2 is the last release line for
# PostgreSQL 15), starts a coordinator and two workers, and b2bdwh migrate distributes the
# warehouse (B2B_CITUS_WORKERS, from db/citus.sh env). The source database lives on the
# coordinator as a plain one.
citus: venv
	@bash db/citus.sh build
	@bash db/citus.sh up
	@eval "$$(bash db/citus.sh env)" && $(BIN)/b2bdwh migrate
	@echo 'The warehouse is distributed. Use it with:  eval "$$(bash db/citus.sh env)"'
	@echo '  then b2bdwh generate, CALL etl.run_initial_load() in psql, b2bdwh compare, ...'

# The suites that run on Citus too: every warehouse they make is distributed (pytest
# --citus). Where Citus is not installed they are skipped with one line saying so.
# (A recipe line, not a make call: make test has installed its tools already, and nothing
# may be installed once a server runs.)
CITUS_TESTS ?= tests/test_initial_load.py tests/test_incremental_concurrency.py \
	tests/test_concurrent_callers.py tests/test_model_based.py tests/test_data_quality.py
CITUS_TESTS_RUN = if bash db/citus.sh available; then bash db/citus.sh up; fi; \
	$(BIN)/pytest --citus $(CITUS_TESTS) $(PYTEST_ARGS)
test-citus: venv tools
	@$(CITUS_TESTS_RUN)

# Tools the tests run besides Python and PostgreSQL: pgTAP (installed by db/cluster.sh
# when root, or the command to install it and stop), and Chromium, which renders the HTML
# report headless (tests/test_report.py): installed with apt-get when run as root;
# otherwise the test fails and says how to install it.
tools:
	@$(CLUSTER) pgtap
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (headless browser for the report test): apt-get install -y chromium"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is missing: tests/test_report.py will fail. Install it: sudo apt-get install -y chromium"; \
	  fi; }

# make bench: not part of make test. SCALE defaults to 100 here (the demo's default of 1
# is kept unless SCALE is given on the command line or in the environment).
BENCH_SCALE = $(if $(filter command line environment,$(origin SCALE)),$(SCALE),100)
BENCH_ARGS ?=

bench: venv up
	@$(WITH_ENV) $(BIN)/python bench/run.py --scale $(BENCH_SCALE) $(BENCH_ARGS)

# make soak: not part of make test. SCALE defaults to 5 here, as BENCH_SCALE does to 100.
SOAK_SECONDS ?= 300
SOAK_SCALE = $(if $(filter command line environment,$(origin SCALE)),$(SCALE),5)
SOAK_ARGS ?=

soak: venv up
	@$(WITH_ENV) $(BIN)/python bench/soak.py --seconds $(SOAK_SECONDS) --scale $(SOAK_SCALE) $(SOAK_ARGS)

lint: venv
	$(BIN)/sqlfluff lint migrations procedures
	$(BIN)/ruff check src tests dags bench
	$(BIN)/ruff format --check src tests dags bench

# Re-pin every dependency after changing pyproject.toml.
lock:
	rm -rf build/lockvenv && $(PYTHON) -m venv build/lockvenv
	build/lockvenv/bin/pip install -q -e '.[dev]'
	{ echo "# Pinned dependency set, installed by 'make venv'. Regenerate with 'make lock'"; \
	  echo "# after changing the ranges in pyproject.toml."; \
	  build/lockvenv/bin/pip freeze --exclude-editable; } > requirements.lock
	rm -rf build/lockvenv

# .pgdata may be a link to a data directory under /tmp (see db/cluster.sh): remove both.
clean: down
	rm -rf $(VENV) .airflow "$$(readlink -f .pgdata)" .pgdata
