# Two commands a user needs: `make run` and `make test`. Both create .venv if missing.
PY      ?= python3.11
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PORT    ?= 5000

.PHONY: setup run train sweep test test-all lint ui dashboard tracking-server bench mutate clean

setup: $(STAMP)

# torch first, pinned, so pip takes the CPU wheel instead of resolving a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt torch==2.13.0
	$(VPY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The main job: the learning-rate divergence sweep on the embedded cohort, two worker processes.
run: setup
	$(VPY) pipelines/sweep.py sweep.n_workers=2

train: setup
	$(VPY) pipelines/train.py $(ARGS)

# The fast suite in TEST_JOBS processes (pytest-xdist; worksteal: an idle worker takes tests queued
# for the other, so the suite does not end on one worker's long tail), in random order (pytest-randomly).
TEST_JOBS ?= 2
# Bytecode cached even where the environment says not to (PYTHONDONTWRITEBYTECODE): each worker and
# each pipeline process a test starts would compile the package and rewrite the tests' asserts again
# (measured: 89-93 s -> 85-87 s on 2 cores).
test: setup
	PYTHONDONTWRITEBYTECODE= $(VPY) -m pytest -n $(TEST_JOBS) --dist worksteal

# Everything: the fast suite plus the slow (browser, servers) and service (PostgreSQL) tests.
test-all: setup
	$(VPY) -m pytest -m ''

lint: setup
	$(VPY) -m ruff check src pipelines tests benchmarks

ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --default-artifact-root mlruns/artifacts --host 127.0.0.1 --port $(PORT)

# optuna-dashboard on the sweeps' Optuna storage, bound to loopback (README: Sweeps in optuna-dashboard).
# STORAGE: the journal file (default) or a database URL (sqlite:///..., postgresql://...).
STORAGE ?= mlruns/optuna-journal.log
DASH_PORT ?= 8080
dashboard: setup
	@$(VPY) -c "import optuna_dashboard" 2>/dev/null || $(VPY) -m pip install -q -c constraints.txt -e '.[dashboard]'
	$(VENV)/bin/optuna-dashboard --host 127.0.0.1 --port $(DASH_PORT) \
	  $(if $(findstring ://,$(STORAGE)),,--storage-class JournalFileStorage) $(STORAGE)

# An MLflow tracking server on PostgreSQL for sweeps on several machines (README: Scaling out).
# Binds 127.0.0.1 by default. HOST=0.0.0.0 (or one address) serves other machines: then only with
# MLflow's basic-auth app, whose admin user is MLFLOW_AUTH_ADMIN_USERNAME (default admin) with
# MLFLOW_AUTH_ADMIN_PASSWORD from the environment (used when the user database $(MLFLOW_DB)_auth is
# created; required at every start beyond loopback); clients set MLFLOW_TRACKING_USERNAME /
# MLFLOW_TRACKING_PASSWORD. The server answers only the Host headers in --allowed-hosts (others get
# HTTP 403 "Invalid Host header"): loopback, HOST itself, for 0.0.0.0 this machine's name and IPv4
# addresses, each bare and with :PORT; ALLOWED_HOSTS=name:port,... adds more (a DNS alias).
# The basic-auth app needs MLflow's auth extra (Flask-WTF), installed here when missing, and a
# CSRF key: MLFLOW_FLASK_SERVER_SECRET_KEY, else one made once in mlruns/flask_secret_key.
# Database password: PGPASSWORD.
PGURL   ?= postgresql://postgres@127.0.0.1:5432
MLFLOW_DB ?= mlflow
HOST    ?= 127.0.0.1
ALLOWED_HOSTS ?=
LOOPBACK := 127.0.0.1 localhost ::1
empty   :=
comma   := ,
space   := $(empty) $(empty)
SERVER_NAMES = $(if $(filter 0.0.0.0,$(HOST)),$(shell hostname) $(shell hostname -f 2>/dev/null) \
	$(foreach a,$(shell hostname -I 2>/dev/null),$(if $(findstring :,$(a)),,$(a))),$(HOST))
SERVER_HOSTS = $(subst $(space),$(comma),$(strip $(foreach h,$(sort 127.0.0.1 localhost $(SERVER_NAMES)),$(h) $(h):$(PORT)) \
	$(subst $(comma),$(space),$(ALLOWED_HOSTS))))
ifneq ($(filter tracking-server,$(MAKECMDGOALS)),)
ifeq ($(filter $(HOST),$(LOOPBACK)),)
ifeq ($(strip $(MLFLOW_AUTH_ADMIN_PASSWORD)),)
$(error error: HOST=$(HOST) serves other machines, so the server needs authentication: set MLFLOW_AUTH_ADMIN_PASSWORD (and MLFLOW_AUTH_ADMIN_USERNAME, default admin) in the environment; clients set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)
endif
endif
endif
AUTH_DB = $(if $(filter $(HOST),$(LOOPBACK)),,$(MLFLOW_DB)_auth)
tracking-server: setup
	$(VPY) -c "import psycopg; c = psycopg.connect('$(PGURL)/postgres'); c.autocommit = True; cur = c.cursor(); [cur.execute(\"SELECT 1 FROM pg_database WHERE datname = %s\", (d,)).fetchone() or cur.execute('CREATE DATABASE ' + d) for d in '$(MLFLOW_DB) $(AUTH_DB)'.split()]"
	$(if $(AUTH_DB),$(VPY) -c "import flask_wtf" 2>/dev/null || $(VPY) -m pip install -q -c constraints.txt 'mlflow[auth]==3.17.2')
	$(if $(AUTH_DB),mkdir -p mlruns && printf '[mlflow]\ndefault_permission = EDIT\ndatabase_uri = %s\nadmin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' '$(PGURL)/$(AUTH_DB)' > mlruns/basic_auth.ini)
	$(if $(AUTH_DB),test -s mlruns/flask_secret_key || (umask 077 && $(VPY) -c "import secrets; print(secrets.token_hex(32))" > mlruns/flask_secret_key))
	$(if $(AUTH_DB),MLFLOW_AUTH_CONFIG_PATH=mlruns/basic_auth.ini MLFLOW_FLASK_SERVER_SECRET_KEY="$${MLFLOW_FLASK_SERVER_SECRET_KEY:-$$(cat mlruns/flask_secret_key)}") $(VENV)/bin/mlflow server --backend-store-uri $(PGURL)/$(MLFLOW_DB) \
	  --serve-artifacts --artifacts-destination mlruns/server-artifacts --host $(HOST) --port $(PORT) \
	  --allowed-hosts '$(SERVER_HOSTS)' $(if $(AUTH_DB),--app-name basic-auth)

bench: setup
	$(VPY) benchmarks/bench_train.py

# Mutation testing of the core modules (docs/testing.md): mutmut copies src/, tests/ and conf/ into
# mutants/ and runs, for each mutant, the tests of [tool.mutmut] that call the mutated function.
# Not part of `make test` or CI: run it by hand before a change to a core module lands.
#   make mutate                       every core module (about 15 min on one core)
#   make mutate MODULES="metrics guard"   some of them (short names below, or dotted module paths)
#   make mutate MUTATE_JOBS=2         two mutants at a time (the default 1 leaves a core to others)
MODULES     ?= metrics calibration guard retry study verdict validate
MUTATE_JOBS ?= 1
MUT_metrics     := 'dropout_risk.analysis.metrics.*'
MUT_calibration := 'dropout_risk.analysis.calibration.*'
MUT_guard       := 'dropout_risk.training.guard.*'
MUT_retry       := 'dropout_risk.sweep.retry.*'
MUT_verdict     := 'dropout_risk.reproduce.verdict.*'
MUT_validate    := 'dropout_risk.config.validate.*'
# study.py: its retry and resume bookkeeping only (open_study is covered by the sweep tests)
MUT_study       := $(foreach f,effective_trials recover_dead_trials close_orphan_runs _alive claim_trial,'dropout_risk.sweep.study.x_$(f)__mutmut_*')
mutate: setup
	$(VENV)/bin/mutmut run --max-children $(MUTATE_JOBS) $(foreach m,$(MODULES),$(or $(MUT_$(m)),'dropout_risk.$(m).*'))
	@printf "%-36s %7s %7s %8s %8s %7s\n" "module (mutants run so far)" mutants killed timeout survived "no test"
	@$(VENV)/bin/mutmut results --all true | sed 's/^ *//' | awk -F': ' '$$2 != "not checked" { m = $$1; sub(/\.[^.]*$$/, "", m); n[m]++; s[m " " $$2]++ } \
	  END { for (m in n) printf "%-36s %7d %7d %8d %8d %7d\n", m, n[m], s[m " killed"], s[m " timeout"], s[m " survived"], s[m " no tests"] }' | sort
	@echo "survivors: $(VENV)/bin/mutmut results; one diff: $(VENV)/bin/mutmut show NAME; reasons: docs/testing.md"

clean:
	rm -rf $(VENV) .pytest_cache mutants
