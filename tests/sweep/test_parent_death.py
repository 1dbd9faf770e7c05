"""A sweep's coordinator killed with SIGKILL: its local worker stops within seconds (closing its
trial), and the same command resumes the study to its planned count with nothing left RUNNING."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import optuna
import pytest
from helpers import PYTHON, ROOT
from mlflow import MlflowClient
from optuna.trial import TrialState

from dropout_risk.sweep.storage import make_storage
from dropout_risk.sweep.study import _alive, effective_trials
from dropout_risk.tracking.process import start_ticks

SMALL = ["optim=sgd", "sweep.lr_min=0.01", "sweep.lr_max=1e4", "sweep.n_scan=6", "sweep.n_refine=2", "sweep.seeds=1",
         "data.n_students=3000", "trainer.max_epochs=6", "tracking.reliability_every_n_epochs=1"]


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (its new parent, pid 1 here, need not reap it)."""
    return start_ticks(pid) is None


def _runs(uri: str, query: str):
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, query) if exps else []


def test_a_zombie_worker_is_dead_to_the_study() -> None:
    """An orphaned worker that exited stays a zombie where pid 1 does not reap (as here): it still
    answers signal 0, but its trial must be recovered, not waited for."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        while start_ticks(pid) is not None:  # until it has exited, unreaped
            time.sleep(0.01)
        assert _alive(pid) is False
    finally:
        os.waitpid(pid, 0)


@pytest.mark.slow
def test_worker_stops_when_its_coordinator_is_killed_and_the_sweep_resumes(tmp_path):
    journal = tmp_path / "journal.log"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [PYTHON, str(ROOT / "pipelines" / "sweep.py"), *SMALL, "sweep.n_workers=2", "sweep.study=orphan",
            f"sweep.storage=journal://{journal}", f"tracking.uri={uri}",
            f"tracking.artifact_location={tmp_path}/artifacts"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
    storage = make_storage(f"journal://{journal}")
    worker = None
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:  # both processes in a trial whose MLflow run exists
            time.sleep(0.3)
            try:
                trials = optuna.load_study(study_name="orphan", storage=storage).get_trials()
            except KeyError:
                continue
            pids = {t.user_attrs.get("pid") for t in trials if t.state == TrialState.RUNNING}
            others = pids - {proc.pid, None}
            running = _runs(uri, "attributes.status = 'RUNNING' and tags.trial != ''") if others else []
            if proc.pid in pids and others and {r.data.tags.get("pid") for r in running} >= {str(p) for p in pids}:
                worker = others.pop()
                break
        assert worker is not None, "the sweep never had both processes in a trial: " + log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = time.monotonic()
    while not _gone(worker) and time.monotonic() - killed_at < 30:
        time.sleep(0.1)
    assert _gone(worker), f"worker {worker} still runs 30 s after its coordinator was killed"
    time.sleep(0.5)  # its last line reaches the log
    assert f"its coordinator (pid {proc.pid}) died" in log.read_text()
    # the worker closed its own trial's run; the coordinator's run and the parent are still RUNNING
    assert [r for r in _runs(uri, "attributes.status = 'RUNNING'") if r.data.tags.get("pid") == str(worker)] == []
    left = _runs(uri, "attributes.status = 'RUNNING'")
    assert left and {r.data.tags.get("pid") for r in left} == {str(proc.pid)}

    rerun = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    notes = [ln for ln in rerun.stderr.splitlines() if ln.startswith("note: closed")]
    assert len(notes) == 1 and all(r.info.run_id in notes[0] for r in left), rerun.stderr
    study = optuna.load_study(study_name="orphan", storage=make_storage(f"journal://{journal}"))
    eff = effective_trials(study)
    assert len(eff) == 8 and all(t.state.is_finished() for t in eff)
    for t in eff:  # a real outcome for each: never a trial of a dead or stopped process
        assert t.user_attrs.get("outcome") in ("converged", "diverged", "pruned"), (t.number, t.user_attrs)
    assert _runs(uri, "attributes.status = 'RUNNING'") == []
    sweep_id = re.search(r"^sweep_run_id: (\w+)$", rerun.stdout, re.M).group(1)
    parent = MlflowClient(uri).get_run(sweep_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["pid"] != str(proc.pid)
