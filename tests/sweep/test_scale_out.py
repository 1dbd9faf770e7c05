"""Scale-out on real services: Optuna RDB storage on PostgreSQL shared by worker processes, and
an MLflow tracking server (PostgreSQL backend, artifacts served by the server) that all of them
log to. Marked `service`: they need PostgreSQL on 127.0.0.1:5432 (trust auth). Without it they
skip, unless DROPOUT_RISK_REQUIRE_SERVICES=1 (set by .ci/run) turns the skip into a failure."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import optuna
import pytest
from helpers import PYTHON, ROOT, start_mlflow_server, stop_process_group
from mlflow import MlflowClient

from dropout_risk.errors import SweepError
from dropout_risk.sweep.run import run_sweep
from dropout_risk.sweep.storage import make_storage
from dropout_risk.sweep.study import effective_trials

pytestmark = pytest.mark.service
PG = "postgresql://postgres@127.0.0.1:5432"


def _require_postgres() -> None:
    try:
        import psycopg

        psycopg.connect(f"{PG}/postgres", connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001
        msg = f"PostgreSQL on 127.0.0.1:5432 is not reachable ({exc})"
        if os.environ.get("DROPOUT_RISK_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def _sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture(scope="module")
def databases():
    _require_postgres()
    tag = uuid.uuid4().hex[:8]
    names = {"mlflow": f"dr_mlflow_{tag}", "optuna": f"dr_optuna_{tag}"}
    for name in names.values():
        _sql(f"CREATE DATABASE {name}")
    yield names
    for name in names.values():
        _sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def server(databases, tmp_path_factory):
    """A real `mlflow server` on a loopback port (start_mlflow_server: a new port when the picked
    one was taken); ready once the REST API answers; the whole process group is stopped after."""
    artifacts = tmp_path_factory.mktemp("served-artifacts")

    def answers(uri: str) -> bool:
        MlflowClient(uri).search_experiments(max_results=1)
        return True

    proc, port = start_mlflow_server(
        ["--backend-store-uri", f"{PG}/{databases['mlflow']}", "--serve-artifacts",
         "--artifacts-destination", str(artifacts)],
        cwd=artifacts.parent, log_dir=artifacts.parent, probe=answers, timeout=240)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(proc)


def _args(server, databases, study, *extra, lr_max="1e4"):
    return [PYTHON, str(ROOT / "pipelines" / "sweep.py"), "tracking=server", f"tracking.uri={server}",
            f"sweep.storage={PG}/{databases['optuna']}", f"sweep.study={study}", "optim=sgd",
            "sweep.lr_min=0.01", f"sweep.lr_max={lr_max}", "sweep.n_scan=6", "sweep.n_refine=2", "sweep.seeds=1",
            "sweep.population_size=2", "sweep.heartbeat_s=2",  # populations of 2: both machines find trials
            "tracking.reliability_every_n_epochs=2", *extra]


def _wait_for_study(databases, study, timeout=180):
    storage = make_storage(f"{PG}/{databases['optuna']}")
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            s = optuna.load_study(study_name=study, storage=storage)
            if "parent_run_id" in s.user_attrs:
                return s
        except KeyError:
            pass
        time.sleep(0.5)
    pytest.fail(f"study {study} never appeared")


def test_two_machines_share_one_study_and_one_parent_run(server, databases, tmp_path):
    # trials that all converge and last ~2 s each, so the second machine (which joins once the
    # study exists and then pays its imports) still finds waiting trials
    args = _args(server, databases, "lr-sgd-01", "data.n_students=6000", "trainer.max_epochs=20", lr_max="1")
    coordinator = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_study(databases, "lr-sgd-01")
    worker = subprocess.run([*args, "sweep.role=worker"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out, _ = coordinator.communicate(timeout=600)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert coordinator.returncode == 0, out
    study = optuna.load_study(study_name="lr-sgd-01", storage=make_storage(f"{PG}/{databases['optuna']}"))
    trials = study.get_trials()
    assert len(trials) == 8 and len({t.number for t in trials}) == 8
    assert all(t.state.is_finished() for t in trials)
    pids = {t.user_attrs["pid"] for t in trials}
    assert worker.stdout.count("[trial ") >= 1 and len(pids) == 2
    client = MlflowClient(server)
    parent_id = study.user_attrs["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(kids) == 8 and {k.info.status for k in kids} == {"FINISHED"}
    # artifacts went through the server: download them back, no shared disk involved
    local = client.download_artifacts(parent_id, "plots/divergence.png", str(tmp_path))
    assert open(local, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert client.list_artifacts(kids[0].info.run_id, "config")[0].path == "config/config.yaml"


def test_killed_worker_trial_is_retried(server, databases, tmp_path):
    args = _args(server, databases, "lr-sgd-02", "data.n_students=6000", "trainer.max_epochs=30", lr_max="1")
    coordinator = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    study = _wait_for_study(databases, "lr-sgd-02")
    worker = subprocess.Popen([*args, "sweep.role=worker"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    killed_trial = None
    while time.time() < deadline and killed_trial is None:  # kill the worker in the middle of a trial
        time.sleep(0.3)
        for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            if t.user_attrs.get("pid") == worker.pid and t.user_attrs.get("phase") == "scan":
                time.sleep(1.0)
                worker.send_signal(signal.SIGKILL)
                killed_trial = t.number
                break
    worker.wait()
    assert killed_trial is not None, "the worker never took a trial"
    out, _ = coordinator.communicate(timeout=900)
    assert coordinator.returncode == 0, out
    study = optuna.load_study(study_name="lr-sgd-02", storage=make_storage(f"{PG}/{databases['optuna']}"))
    eff = effective_trials(study)
    assert len(eff) == 8 and all(t.state.is_finished() for t in eff)
    retry = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == killed_trial]
    assert len(retry) == 1 and retry[0].state.is_finished()
    assert study.trials[killed_trial].state == optuna.trial.TrialState.FAIL
    client = MlflowClient(server)
    parent_id = study.user_attrs["parent_run_id"]
    exp = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}' and tags.trial = '{killed_trial}'")
    assert [r.info.status for r in runs] == ["KILLED"]
    assert client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'RUNNING'") == []


def test_unknown_database_user_is_one_line(databases, make_cfg, tmp_path):
    cfg = make_cfg("sweep.storage=postgresql://no_such_user@127.0.0.1:5432/postgres", config="sweep")
    t0 = time.time()
    with pytest.raises(SweepError, match="cannot open") as info:
        run_sweep(cfg, log=lambda _: None)
    assert "\n" not in str(info.value) and time.time() - t0 < 15
