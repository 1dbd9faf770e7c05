# Two commands a user needs: `make run` and `make test`. Both create .venv if missing.
PY      ?= python3.11
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PORT    ?= 5000

.PHONY: setup run train sweep test test-all lint ui tracking-server bench mutate clean

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

# The fast suite in TEST_JOBS processes (pytest-xdist), in random order (pytest-randomly).
TEST_JOBS ?= 2
test: setup
	$(VPY) -m pytest -n $(TEST_JOBS)

# Everything: the fast suite plus the slow (browser, servers) and service (PostgreSQL) tests.
test-all: setup
	$(VPY) -m pytest -m ''

lint: setup
	$(VPY) -m ruff check src pipelines tests benchmarks

ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --default-artifact-root mlruns/artifacts --host 127.0.0.1 --port $(PORT)

# An MLflow tracking server on PostgreSQL for sweeps on several machines (README: Scaling out).
# Binds 127.0.0.1 by default; HOST=0.0.0.0 to serve other machines. Password: PGPASSWORD.
PGURL   ?= postgresql://postgres@127.0.0.1:5432
MLFLOW_DB ?= mlflow
HOST    ?= 127.0.0.1
tracking-server: setup
	$(VPY) -c "import psycopg; c = psycopg.connect('$(PGURL)/postgres'); c.autocommit = True; cur = c.cursor(); cur.execute(\"SELECT 1 FROM pg_database WHERE datname = '$(MLFLOW_DB)'\"); cur.fetchone() or cur.execute('CREATE DATABASE $(MLFLOW_DB)')"
	$(VENV)/bin/mlflow server --backend-store-uri $(PGURL)/$(MLFLOW_DB) --serve-artifacts --artifacts-destination mlruns/server-artifacts --host $(HOST) --port $(PORT)

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
