# Two commands a user needs: `make run` and `make test`. Both create .venv if missing.
PY      ?= python3.11
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PORT    ?= 5000

.PHONY: setup run train sweep test test-all lint ui bench clean

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

bench: setup
	$(VPY) benchmarks/bench_train.py

clean:
	rm -rf $(VENV) .pytest_cache
