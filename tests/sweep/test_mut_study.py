"""The sweep's retry and resume bookkeeping on real parts, without training: a real Optuna journal
storage, a real MLflow store, a real dead process and a live child one. Cases from mutation testing (docs/testing.md):
which trials count, which are claimed and in what order, which dead trials are retried (once, at
which learning rate), and which MLflow runs are closed as KILLED."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from dropout_risk.sweep.retry import enqueue_retry, retry_failed_trial
from dropout_risk.sweep.storage import make_storage
from dropout_risk.sweep.study import (
    _alive,
    claim_trial,
    close_orphan_runs,
    effective_trials,
    recover_dead_trials,
)

HOST = socket.gethostname()
GRID = [0.01, 0.1, 1.0]


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    """A study laid out as open_study creates one: three scan trials at their grid learning rates,
    then two refine trials, all WAITING, in a journal file of this test's own."""
    s = optuna.create_study(study_name="bookkeeping", storage=make_storage(f"journal://{tmp_path}/journal.log"))
    for lr in GRID:
        s.enqueue_trial({"lr": lr}, user_attrs={"phase": "scan", "lr_planned": lr})
    for _ in range(2):
        s.enqueue_trial({}, user_attrs={"phase": "refine"})
    return s


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not _alive(proc.pid)
    return proc.pid


@pytest.fixture
def live_child():
    """A running child process of this test's own: what _alive probes instead of this process, so
    that a probe sending a real signal hits the child and not the test run."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _claim(study: optuna.Study, phase: str | None = None, *, pid: int | None = None, host: str = HOST) -> optuna.Trial:
    trial = claim_trial(study, phase)
    assert trial is not None
    if pid is not None:
        trial.set_user_attr("host", host)
        trial.set_user_attr("pid", pid)
    return trial


def _trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    return study.get_trials(deepcopy=False)[number]


def test_claim_takes_scan_trials_first_in_order_then_refine_then_none(study) -> None:
    # a retried scan trial enqueued after the refine ones still comes before them
    first = _claim(study)
    study.tell(first, state=TrialState.FAIL)
    enqueue_retry(study, _trial(study, first.number))  # trial 5: scan, lr 0.01
    claimed = [claim_trial(study) for _ in range(5)]
    assert [t.number for t in claimed] == [1, 2, 5, 3, 4]
    assert claim_trial(study) is None
    assert len(study.get_trials()) == 6  # never a trial beyond the planned (and retried) ones
    assert {t.state for t in study.get_trials()[1:]} == {TrialState.RUNNING}


def test_claim_by_phase(study) -> None:
    assert _claim(study, "refine").number == 3
    assert _claim(study, "scan").number == 0
    assert _claim(study, "refine").number == 4
    assert claim_trial(study, "refine") is None
    assert _trial(study, 1).state == TrialState.WAITING  # the filter did not claim a scan trial
    assert _trial(study, 3).state == TrialState.RUNNING


def test_claim_skips_trials_other_workers_took_meanwhile(study) -> None:
    """Two other workers on the same storage, and this one's list of WAITING trials is stale: trial 0
    was claimed and has finished (the storage raises), trial 1 is running (the storage says no)."""
    other = optuna.load_study(study_name=study.study_name, storage=study._storage)
    stale = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    finished, running = claim_trial(other), claim_trial(other)
    other.tell(finished, 0.5)
    assert (finished.number, running.number) == (0, 1)
    original = study.get_trials
    study.get_trials = lambda deepcopy=True, states=None: stale if states == (TrialState.WAITING,) else original(deepcopy, states)
    try:
        mine = claim_trial(study)
    finally:
        study.get_trials = original
    assert mine is not None and mine.number == 2


def test_retry_of_a_scan_trial_keeps_its_learning_rate(study) -> None:
    trial = _claim(study)
    assert trial.suggest_float("lr", 1e-3, 10.0, log=True) == 0.01  # the enqueued grid value
    retry_failed_trial(study, _trial(study, trial.number))
    retry = study.get_trials()[-1]
    assert retry.state == TrialState.WAITING
    assert retry.system_attrs["fixed_params"] == {"lr": 0.01}
    assert retry.user_attrs == {"phase": "scan", "lr_planned": 0.01, "retry_of": 0}


def test_retry_of_a_scan_trial_without_a_planned_rate_uses_the_one_it_ran(tmp_path) -> None:
    s = optuna.create_study(study_name="no-plan", storage=make_storage(f"journal://{tmp_path}/j.log"))
    s.enqueue_trial({"lr": 0.25}, user_attrs={"phase": "scan"})
    trial = claim_trial(s)
    trial.suggest_float("lr", 1e-3, 10.0, log=True)
    enqueue_retry(s, s.get_trials()[trial.number])
    retry = s.get_trials()[-1]
    assert retry.system_attrs["fixed_params"] == {"lr": 0.25}
    assert retry.user_attrs == {"phase": "scan", "lr_planned": None, "retry_of": 0}


def test_retry_of_a_scan_trial_that_never_suggested_uses_the_planned_rate(study) -> None:
    trial = _claim(study)
    enqueue_retry(study, _trial(study, trial.number))
    retry = study.get_trials()[-1]
    assert retry.system_attrs["fixed_params"] == {"lr": 0.01}
    assert retry.user_attrs["retry_of"] == trial.number


def test_retry_of_a_refine_trial_is_sampled_afresh(study) -> None:
    trial = _claim(study, "refine")
    trial.suggest_float("lr", 0.01, 0.1, log=True)
    enqueue_retry(study, _trial(study, trial.number))
    retry = study.get_trials()[-1]
    assert retry.system_attrs.get("fixed_params", {}) == {}
    assert retry.user_attrs == {"phase": "refine", "lr_planned": None, "retry_of": 3}


def test_a_trial_without_a_phase_is_retried_as_scan(tmp_path) -> None:
    s = optuna.create_study(study_name="old", storage=make_storage(f"journal://{tmp_path}/j.log"))
    s.enqueue_trial({"lr": 0.5})
    trial = claim_trial(s)
    enqueue_retry(s, s.get_trials()[trial.number])
    retry = s.get_trials()[-1]
    assert retry.user_attrs == {"phase": "scan", "lr_planned": None, "retry_of": 0}
    assert retry.system_attrs.get("fixed_params", {}) == {}


def test_effective_trials_drop_the_retried_ones_in_trial_order(study) -> None:
    assert [t.number for t in effective_trials(study)] == [0, 1, 2, 3, 4]
    a, b = _claim(study), _claim(study)
    study.tell(a, state=TrialState.FAIL)
    study.tell(b, state=TrialState.FAIL)
    enqueue_retry(study, _trial(study, b.number))  # 5 replaces 1
    enqueue_retry(study, _trial(study, a.number))  # 6 replaces 0
    assert [t.number for t in effective_trials(study)] == [2, 3, 4, 5, 6]


def test_alive_only_probes_a_live_process(live_child) -> None:
    assert _alive(live_child.pid) is True
    with pytest.raises(subprocess.TimeoutExpired):  # signal 0 delivers nothing: still running
        live_child.wait(timeout=0.3)


def test_a_process_not_ours_to_signal_is_alive(monkeypatch) -> None:
    def refuse(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")  # another user's process (we are not root)

    monkeypatch.setattr(os, "kill", refuse)
    assert _alive(4321) is True


def test_alive_of_a_dead_process(dead_pid) -> None:
    assert _alive(dead_pid) is False


def test_recover_fails_and_retries_only_this_machines_dead_trials(study, dead_pid, live_child, tmp_path) -> None:
    dead = _claim(study, pid=dead_pid)  # 0: its process died on this machine
    _claim(study, pid=live_child.pid)  # 1: alive
    _claim(study, pid=dead_pid, host=HOST + "-elsewhere")  # 2: another machine's (the heartbeat's job)
    _claim(study)  # 3: no pid recorded yet
    uri = f"sqlite:///{tmp_path}/unused.db"
    assert recover_dead_trials(study, uri, None) == 1
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[dead.number].user_attrs["outcome"] == "worker_died"
    assert [t.state for t in trials[1:4]] == [TrialState.RUNNING] * 3
    assert trials[-1].number == 5 and trials[-1].user_attrs == {"phase": "scan", "lr_planned": 0.01, "retry_of": 0}
    # recovering again (another process, or the next poll) retries nothing twice
    assert recover_dead_trials(study, uri, None) == 0
    assert len(study.get_trials()) == 6


def test_recover_fails_a_dead_trial_without_a_warning(study, dead_pid, tmp_path) -> None:
    """The trial is failed by state, not by telling no value (which optuna reports as a warning:
    "The value None could not be cast to float.")."""
    trial = _claim(study, pid=dead_pid)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert recover_dead_trials(study, f"sqlite:///{tmp_path}/unused.db", None) == 1
    assert [str(w.message) for w in caught] == []
    assert _trial(study, trial.number).state == TrialState.FAIL


def test_recover_retries_interrupted_and_died_but_not_failed_trials(study, tmp_path) -> None:
    outcomes = {0: "interrupted", 1: "worker_died", 2: "failed", 3: "diverged"}
    for number, outcome in outcomes.items():
        trial = _claim(study)
        assert trial.number == number
        trial.set_user_attr("outcome", outcome)
        study.tell(trial, state=TrialState.FAIL)
    assert recover_dead_trials(study, f"sqlite:///{tmp_path}/unused.db", None) == 2
    retries = [t.user_attrs["retry_of"] for t in study.get_trials() if "retry_of" in t.user_attrs]
    assert retries == [0, 1]


def test_recover_leaves_a_trial_that_finished_meanwhile(study, dead_pid, tmp_path) -> None:
    """The dead trial was failed by someone else between the listing and the tell: no error."""
    trial = _claim(study, pid=dead_pid)
    trial.set_user_attr("outcome", "converged")
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    study.tell(trial, 0.5)
    original = study.get_trials
    study.get_trials = lambda deepcopy=True, states=None: running if states == (TrialState.RUNNING,) else original(deepcopy, states)
    try:
        n = recover_dead_trials(study, f"sqlite:///{tmp_path}/unused.db", None)
    finally:
        study.get_trials = original
    assert n == 0
    assert _trial(study, 0).state == TrialState.COMPLETE


def _runs(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("bookkeeping", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp).info.run_id
    other_parent = client.create_run(exp).info.run_id

    def child(trial: int, parent_id: str = parent) -> str:
        return client.create_run(exp, tags={"mlflow.parentRunId": parent_id, "trial": str(trial)}).info.run_id

    return uri, client, parent, other_parent, child


def test_close_orphan_runs_kills_only_running_children_of_trials_no_longer_running(
        study, dead_pid, live_child, tmp_path) -> None:
    uri, client, parent, other_parent, child = _runs(tmp_path)
    dead, live, done = _claim(study, pid=dead_pid), _claim(study, pid=live_child.pid), _claim(study)
    runs = {"dead": child(dead.number), "live": child(live.number), "done": child(done.number),
            "other sweep": child(dead.number, other_parent)}
    client.set_terminated(runs["done"], "FINISHED")
    assert recover_dead_trials(study, uri, parent) == 1
    status = {k: client.get_run(r).info.status for k, r in runs.items()}
    assert status == {"dead": "KILLED", "live": "RUNNING", "done": "FINISHED", "other sweep": "RUNNING"}
    tags = client.get_run(runs["dead"]).data.tags
    assert tags["outcome"] == "failed" and tags["error"] == "its worker process died"
    assert "outcome" not in client.get_run(runs["live"]).data.tags


def test_close_orphan_runs_on_its_own(study, tmp_path) -> None:
    uri, client, parent, _, child = _runs(tmp_path)
    running = _claim(study)
    finished = _claim(study)
    study.tell(finished, 0.3)
    a, b = child(running.number), child(finished.number)
    close_orphan_runs(study, uri, parent)
    assert client.get_run(a).info.status == "RUNNING" and client.get_run(b).info.status == "KILLED"
