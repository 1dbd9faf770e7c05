# Two commands a user needs: `make run` and `make test`. Both create .venv if missing.
PY      ?= python3.11
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PORT    ?= 5000

.PHONY: setup run train sweep test test-all lint ui tracking-server bench clean

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

test: setup
	$(VPY) -m pytest

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

clean:
	rm -rf $(VENV) .pytest_cache
