"""The sweep's trial bookkeeping on a real Optuna journal storage and a real MLflow store, in
process and fast: a dead worker's trial is re-enqueued at its learning rate and the study still
ends at exactly its planned count; the median pruner prunes a real refine trial; two real worker
processes each hold a trial at the same time (a handshake through the storage, not long trials)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from dropout_risk.sweep.run import run_sweep
from dropout_risk.sweep.space import lr_grid, lr_range
from dropout_risk.sweep.storage import make_storage
from dropout_risk.sweep.study import (
    claim_trial,
    claim_trials,
    effective_trials,
    open_study,
    recover_dead_trials,
)
from dropout_risk.sweep.trial import open_scan_trials, population_size, run_trial, work
from dropout_risk.sweep.workers import start_local_workers, stop_workers
from dropout_risk.tracking.run import Run

# SGD from 0.01 to 0.3 on the embedded cohort: every trial converges (no FAIL is expected).
STABLE = ["optim=sgd", "sweep.lr_min=0.01", "sweep.lr_max=0.3", "sweep.seeds=1", "data.n_students=800", "trainer.max_epochs=3"]


def _cfg(make_cfg, tmp_path, study: str, *extra):
    return make_cfg(*STABLE, f"sweep.storage=journal://{tmp_path}/journal.log", f"sweep.study={study}", *extra,
                    config="sweep")


def _parent(cfg, study: optuna.Study) -> Run:
    """The sweep's parent run, as run_sweep makes it: its id in the study's user attrs."""
    run = Run.start(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location,
                    f"parent-{study.study_name}")
    run.set_tags({"sweep_id": run.run_id})
    study.set_user_attr("parent_run_id", run.run_id)
    return run


def _dead_pid() -> int:
    """The pid of a process of this machine that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_workers_trial_is_re_enqueued_at_its_lr_and_the_study_reaches_its_planned_count(
        make_cfg, client, tmp_path):
    cfg = _cfg(make_cfg, tmp_path, "dead-worker", "sweep.n_scan=3", "sweep.n_refine=0")
    study, created = open_study(cfg, create=True)
    assert created and study.user_attrs["planned"] == 3
    parent = _parent(cfg, study)
    # a worker claimed the first scan trial, started its MLflow run and was killed
    killed = claim_trial(study)
    lr = killed.suggest_float("lr", *lr_range(cfg), log=True)
    assert lr == lr_grid(0.01, 0.3, 3)[0]
    killed.set_user_attr("host", socket.gethostname())
    killed.set_user_attr("pid", _dead_pid())
    orphan = client.create_run(parent.experiment_id, tags={"mlflow.parentRunId": parent.run_id, "trial": str(killed.number)})

    assert recover_dead_trials(study, cfg.tracking.uri, parent.run_id) == 1
    trials = study.get_trials()
    assert trials[killed.number].state == TrialState.FAIL
    assert trials[killed.number].user_attrs["outcome"] == "worker_died"
    retries = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING
    assert retries[0].user_attrs["phase"] == "scan" and retries[0].user_attrs["lr_planned"] == lr
    # the dead process's MLflow run is closed, not left RUNNING
    run = client.get_run(orphan.info.run_id)
    assert run.info.status == "KILLED" and run.data.tags["outcome"] == "failed"
    # looking again re-enqueues nothing more
    assert recover_dead_trials(study, cfg.tracking.uri, parent.run_id) == 0

    assert work(cfg, study, parent.run_id, log=lambda _: None) == 3  # the two others and the retry
    trials = study.get_trials()
    assert len(trials) == 4 and len({t.number for t in trials}) == 4
    eff = effective_trials(study)
    assert len(eff) == 3  # exactly the planned count: the killed trial is superseded by its retry
    assert [t.state for t in eff] == [TrialState.COMPLETE] * 3  # COMPLETE, not merely "finished"
    assert killed.number not in {t.number for t in eff}
    retry = next(t for t in eff if t.user_attrs.get("retry_of") == killed.number)
    assert retry.params["lr"] == lr  # the same learning rate, not a new one
    assert sorted(t.params["lr"] for t in eff) == lr_grid(0.01, 0.3, 3)
    run_ids = [t.user_attrs["run_id"] for t in eff]
    assert len(set(run_ids)) == 3
    retried_run = client.get_run(retry.user_attrs["run_id"])
    assert retried_run.info.status == "FINISHED" and float(retried_run.data.params["optim.lr"]) == lr
    assert retried_run.data.tags["trial"] == str(retry.number)


def test_the_median_pruner_prunes_a_refine_trial_worse_than_the_others(make_cfg, client, tmp_path):
    # the sweep's default pruner (median, 2 startup trials, 2 warm-up epochs), six epochs to prune in
    cfg = _cfg(make_cfg, tmp_path, "prune", "sweep.n_scan=2", "sweep.n_refine=1", "trainer.max_epochs=6")
    assert cfg.sweep.pruner.name == "median"
    study, _ = open_study(cfg, create=True)
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    # a refine trial the pruner has seen finish far better than any trial on this data can
    lo, hi = lr_range(cfg)
    study.add_trial(optuna.trial.create_trial(
        params={"lr": 0.05}, distributions={"lr": optuna.distributions.FloatDistribution(lo, hi, log=True)},
        value=1e-3, intermediate_values={epoch: 1e-3 for epoch in range(1, 7)},
        user_attrs={"phase": "refine", "outcome": "converged"}))
    parent = _parent(cfg, study)
    lines: list[str] = []
    assert work(cfg, study, parent.run_id, log=lines.append) == 3  # two scan trials, one refine trial

    refine = [t for t in study.get_trials() if t.user_attrs.get("phase") == "refine" and "run_id" in t.user_attrs]
    assert len(refine) == 1
    trial = refine[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["outcome"] == "pruned"
    # reported each epoch, and pruned at the first epoch after the warm-up
    warmup = cfg.sweep.pruner.n_warmup_steps
    assert sorted(trial.intermediate_values) == list(range(1, warmup + 1))
    run = client.get_run(trial.user_attrs["run_id"])
    assert run.data.tags["outcome"] == "pruned" and run.data.tags["phase"] == "refine"
    assert run.info.status == "FINISHED"
    # it stopped early: fewer validation epochs than trainer.max_epochs
    epochs = {m.step for m in client.get_metric_history(run.info.run_id, "val/log_loss")}
    assert epochs == set(range(1, warmup + 1)) and run.data.metrics["epochs_completed"] == warmup < 6
    assert any(ln.startswith(f"[trial {trial.number} refine]") and " pruned " in ln for ln in lines)
    # the scan trials, which the pruner does not watch, converged
    scan = [t for t in study.get_trials() if t.user_attrs.get("phase") == "scan"]
    assert [t.state for t in scan] == [TrialState.COMPLETE] * 2


@pytest.mark.slow  # a second process that imports torch, Lightning and MLflow (~10 s); CI runs it
@pytest.mark.timeout(300)
def test_two_workers_each_hold_a_trial_and_reach_the_planned_count(make_cfg, client, tmp_path):
    """The handshake: this process (the coordinator) claims the first trial before the second
    worker process exists, and holds it until that worker has claimed a trial of its own. So
    both processes hold a trial before either finishes one, whatever the speed of the trials."""
    cfg = _cfg(make_cfg, tmp_path, "two", "sweep.n_workers=2", "sweep.n_scan=6", "sweep.n_refine=2",
               "sweep.lr_max=1e4")
    study, created = open_study(cfg, create=True)
    assert created
    held = claim_trial(study)
    held.set_user_attr("host", socket.gethostname())
    held.set_user_attr("pid", os.getpid())
    procs = start_local_workers(cfg)  # the sweep's own spawned worker process
    assert len(procs) == 1
    worker_pid = procs[0].pid
    handshake: dict[str, int] = {}

    def hold_until_the_worker_claims() -> None:
        """Called by run_sweep once the coordinator has made the parent run: wait (bounded by the
        test's timeout) for the worker to claim a trial, then run the held one."""
        while True:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            mine = [t for t in running if t.user_attrs.get("pid") == worker_pid]
            if mine:
                handshake["worker_trial"] = mine[0].number
                break
            assert procs[0].is_alive(), f"the worker exited ({procs[0].exitcode}) without claiming a trial"
            time.sleep(0.05)
        assert study.get_trials(deepcopy=False)[held.number].state == TrialState.RUNNING  # still held
        run_trial(cfg, study, held, study.user_attrs["parent_run_id"], int(study.user_attrs["planned"]),
                  log=lambda _: None)

    try:
        result = run_sweep(cfg, log=lambda _: None, workers=procs, on_imported=hold_until_the_worker_claims)
    finally:
        stop_workers([p for p in procs if p.is_alive()])
    assert procs[0].exitcode == 0
    assert handshake["worker_trial"] != held.number

    study = optuna.load_study(study_name="two", storage=make_storage(f"journal://{tmp_path}/journal.log"))
    trials = study.get_trials()
    assert len(trials) == 8 and len({t.number for t in trials}) == 8  # planned, none lost or duplicated
    assert sorted(t.params["lr"] for t in trials if t.user_attrs["phase"] == "scan") == lr_grid(0.01, 1e4, 6)
    assert {t.user_attrs["pid"] for t in trials} == {os.getpid(), worker_pid}  # both processes worked
    assert trials[held.number].user_attrs["pid"] == os.getpid()
    assert trials[handshake["worker_trial"]].user_attrs["pid"] == worker_pid
    # every trial ran once: one MLflow run each, none left open
    assert result.summary.run_id.is_unique and len(result.summary) == 8
    kids = client.search_runs([result.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert sorted(int(k.data.tags["trial"]) for k in kids) == list(range(8))
    assert {k.info.status for k in kids} == {"FINISHED"}
    assert set(result.summary.run_id) == {k.info.run_id for k in kids}  # the report waited for all of them
    assert set(result.summary.outcome) <= {"converged", "diverged", "pruned"}
    for t in trials:  # a finished outcome for each, and FAIL only for a diverged scan trial
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            t.state == TrialState.FAIL and t.user_attrs["outcome"] == "diverged"), (t.number, t.state, t.user_attrs)
    assert "retry_of" not in {k for t in trials for k in t.user_attrs}


def test_populations_are_claimed_across_the_lr_range(make_cfg, tmp_path):
    """Two workers' populations of a 6-lr scan each span the range (every other trial), so the
    one holding the large, diverging lrs is not done long before the other; refine trials never
    join a scan population, and split over the workers too."""
    cfg = _cfg(make_cfg, tmp_path, "claims", "sweep.n_scan=6", "sweep.n_refine=4", "sweep.n_workers=2")
    study, _ = open_study(cfg, create=True)
    size = lambda phase: population_size(cfg, phase)  # noqa: E731
    assert (size("scan"), size("refine")) == (3, 2)
    first, second = claim_trials(study, size), claim_trials(study, size)
    assert [t.number for t in first] == [0, 2, 4] and [t.number for t in second] == [1, 3, 5]
    refine = claim_trials(study, size)
    assert [t.number for t in refine] == [6, 8]
    assert {study.get_trials()[t.number].user_attrs["phase"] for t in refine} == {"refine"}
    assert [t.number for t in claim_trials(study, size)] == [7, 9] and claim_trials(study, size) == []


def test_a_dead_workers_scan_trial_stays_open_until_its_retry_exists(make_cfg, tmp_path):
    """recover_dead_trials fails a dead worker's trial, then enqueues its retry: a refine trial that
    looks in between must still wait (CI once saw 'no stable learning rate' there)."""
    cfg = _cfg(make_cfg, tmp_path, "open-scan", "sweep.n_scan=2", "sweep.n_refine=1")
    study, _ = open_study(cfg, create=True)
    dead = claim_trial(study)
    assert [t.number for t in open_scan_trials(effective_trials(study))] == [0, 1]
    study._storage.set_trial_user_attr(dead._trial_id, "outcome", "worker_died")
    study.tell(dead.number, state=TrialState.FAIL)  # failed, no retry yet
    assert [t.number for t in open_scan_trials(effective_trials(study))] == [0, 1]
    from dropout_risk.sweep.retry import enqueue_retry

    enqueue_retry(study, study.get_trials()[dead.number])  # the retry replaces it
    assert sorted(t.number for t in open_scan_trials(effective_trials(study))) == [1, 3]
    other = claim_trial(study, phase="scan")
    study.tell(other.number, state=TrialState.FAIL)  # failed for good (no retryable outcome): done
    assert other.number not in {t.number for t in open_scan_trials(effective_trials(study))}
