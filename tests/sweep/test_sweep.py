"""The divergence sweep on real parts: Optuna journal storage, a real MLflow store, Lightning."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import time

import numpy as np
import optuna
import pandas as pd
import pytest
from helpers import PYTHON, ROOT, TINY
from optuna.trial import TrialState

from dropout_risk.errors import SweepError
from dropout_risk.sweep.run import run_sweep
from dropout_risk.sweep.space import lr_grid
from dropout_risk.sweep.storage import make_storage
from dropout_risk.sweep.study import effective_trials, open_study

SMALL = ["optim=sgd", "sweep.lr_min=0.01", "sweep.lr_max=1e4", "sweep.n_scan=5", "sweep.n_refine=2", "sweep.seeds=1",
         "data.n_students=800", "trainer.max_epochs=3"]


def _sweep_cfg(make_cfg, tmp_path, *extra):
    return make_cfg(*SMALL, f"sweep.storage=journal://{tmp_path}/journal.log", *extra, config="sweep")


def test_sweep_end_to_end(make_cfg, client, tmp_path):
    cfg = _sweep_cfg(make_cfg, tmp_path, "sweep.study=e2e", "tracking.figures=true")
    lines: list[str] = []
    result = run_sweep(cfg, log=lines.append)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    # progress trial by trial
    assert sum(1 for ln in lines if ln.startswith("[trial ")) == 7
    # every trial a nested child run, tagged
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(kids) == 7 and {k.info.status for k in kids} == {"FINISHED"}
    assert {k.data.tags["phase"] for k in kids} == {"scan", "refine"}
    assert {k.data.tags["sweep_id"] for k in kids} == {parent.info.run_id}
    # mechanism metrics, gradient norms, the lab page and the flow figure are off in sweeps by default
    for kid in kids:
        assert not any(k.startswith(("mechanism/", "train/grad_norm")) for k in kid.data.metrics)
        assert "mechanism" not in {f.path for f in client.list_artifacts(kid.info.run_id)}
    # lr = 1e4 with SGD diverges; the sweep went on
    by_lr = {float(k.data.params["optim.lr"]): k for k in kids if k.data.tags["phase"] == "scan"}
    assert sorted(by_lr) == lr_grid(0.01, 1e4, 5)
    top = by_lr[1e4]
    assert top.data.tags["outcome"] == "diverged" and int(top.data.tags["diverged_at_step"]) >= 1
    assert any(k.data.tags["outcome"] == "converged" for k in kids)
    # the baselines: fitted once, on the parent; the best trial's verdict against them is there too
    assert {"baseline/logreg/val/log_loss", "baseline/hgb/test/auroc", "vs_baseline/test/auroc_diff",
            "best/test/auroc_ci_low"} <= set(parent.data.metrics)
    for kid in kids:
        assert not [k for k in kid.data.metrics if k.startswith(("baseline/", "vs_baseline/")) or "_ci_" in k]
    assert result.verdict.startswith("best trial - ")
    # chart, grid and summary on the parent
    files = {f.path for f in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/divergence.png", "plots/reliability_grid.png"} <= files
    # the grid is the scan trials' own final diagrams (titled with lr, outcome and ECE), in lr order
    grid = _pixels(client, parent.info.run_id, "plots/reliability_grid.png")
    cells = [_pixels(client, by_lr[lr].info.run_id, "plots/reliability_val.png") for lr in sorted(by_lr)]
    h, w = max(c.shape[0] for c in cells), max(c.shape[1] for c in cells)
    assert grid.shape == (h, 5 * w, 3)  # one row: 5 scan trials, up to 6 per row
    for i, cell in enumerate(cells):
        assert np.array_equal(grid[: cell.shape[0], i * w : i * w + cell.shape[1]], cell)
    csv = client.download_artifacts(parent.info.run_id, "sweep_summary.csv")
    summary = pd.read_csv(csv)
    assert list(summary.columns[:5]) == ["trial", "phase", "lr", "seed", "outcome"]
    assert len(summary) == 7 and summary.trial.is_unique
    for row in summary.itertuples():  # the summary agrees with MLflow
        run = client.get_run(row.run_id)
        assert run.data.tags["outcome"] == row.outcome
        assert run.data.tags["trial"] == str(row.trial)
        if row.outcome == "converged":
            assert run.data.metrics["val/log_loss"] == pytest.approx(row.val_loss)
    m = parent.data.metrics
    assert m["sharpness_init"] > 0 and m["gd_threshold"] == pytest.approx(2 / m["sharpness_init"])
    assert m["boundary/smallest_diverged_lr"] <= 1e4
    assert m["n_trials"] == 7 and m["n_diverged"] >= 1
    assert parent.data.tags["best_run_id"] in {k.info.run_id for k in kids}
    # refine trials stay inside the stable range the scan found
    refine = summary[summary.phase == "refine"]
    assert (refine.lr < m["boundary/smallest_diverged_lr"]).all()
    # running the same sweep again resumes a finished study: nothing re-runs
    again = run_sweep(cfg, log=lines.append)
    assert len(again.summary) == 7 and again.parent_run_id == result.parent_run_id


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    journal = tmp_path / "journal.log"
    args = [PYTHON, str(ROOT / "pipelines" / "sweep.py"), *SMALL, "sweep.n_scan=6", "sweep.study=crash",
            f"sweep.storage=journal://{journal}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"tracking.artifact_location={tmp_path}/artifacts", "trainer.max_epochs=6", "data.n_students=3000"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    storage = make_storage(f"journal://{journal}")
    while time.time() < deadline:  # kill it in the middle of a trial, after at least two finished
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name="crash", storage=storage).get_trials()
        except KeyError:
            continue
        done = sum(t.state.is_finished() for t in trials)
        running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
        if done >= 2 and running and _running_mlflow_runs(tmp_path):  # the trial's run exists
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert time.time() < deadline, "the sweep never got going"
    rerun = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "re-enqueued" in rerun.stdout
    study = optuna.load_study(study_name="crash", storage=make_storage(f"journal://{journal}"))
    eff = effective_trials(study)
    assert len(eff) == 8
    for t in eff:  # a real outcome for each: FAIL only where the scan diverged, never a dead worker's trial
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            t.state == TrialState.FAIL and t.user_attrs.get("outcome") == "diverged"), (t.number, t.state, t.user_attrs)
    killed = [t for t in study.get_trials() if t.user_attrs.get("outcome") == "worker_died"]
    assert killed, "no trial was marked as its worker's death"
    for dead in killed:  # each re-enqueued once, at its learning rate, and that retry is what counts
        retries = [t for t in eff if t.user_attrs.get("retry_of") == dead.number]
        assert len(retries) == 1 and dead.number not in {t.number for t in eff}
        if dead.user_attrs.get("phase") == "scan":
            assert retries[0].params["lr"] == dead.params.get("lr", dead.user_attrs["lr_planned"])
    numbers = [t.number for t in study.get_trials()]
    assert len(numbers) == len(set(numbers))
    assert sorted(t.params["lr"] for t in eff if t.user_attrs["phase"] == "scan") == lr_grid(0.01, 1e4, 6)
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("dropout-risk")
    assert client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'") == []
    assert client.search_runs([exp.experiment_id], "attributes.status = 'KILLED'")  # the killed trial's run
    sweep_id = re.search(r"^sweep_run_id: (\w+)$", rerun.stdout, re.M).group(1)
    assert client.get_run(sweep_id).info.status == "FINISHED"


def _pixels(client, run_id: str, path: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(client.download_artifacts(run_id, path)).convert("RGB"))


def test_a_bad_value_stops_the_early_workers(tmp_path):
    """pipelines/sweep.py starts its local workers as soon as the command line composes, before
    the value checks: a value the checks refuse must end them too (not leave them waiting)."""
    marker = f"dropout-risk-test-{os.getpid()}-{time.time_ns()}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "DROPOUT_RISK_TEST_MARKER": marker}
    proc = subprocess.run([PYTHON, str(ROOT / "pipelines" / "sweep.py"), "sweep.n_workers=2", "optim.lr=-1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "error: optim.lr=-1.0 must be > 0: pass a positive learning rate, e.g. optim.lr=1e-3"]
    assert _processes_with(marker) == [], "a worker outlived the refused command"
    assert not (tmp_path / "mlruns").exists()  # nothing written


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                continue
    return found


def _running_mlflow_runs(tmp_path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"{tmp_path}/mlflow.db", timeout=1) as db:
            return db.execute("SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                              "WHERE r.status = 'RUNNING' AND t.key = 'trial'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.timeout(60)  # refused at once: no hang on an unreachable storage or server
@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["sweep.lr_min=1", "sweep.lr_max=0.1"], "inverted"),
        (["sweep.lr_min=1", "sweep.lr_max=1"], "inverted"),
        (["sweep.n_scan=1"], "at least 2"),
        (["sweep.storage=redis://localhost/0"], "unknown storage scheme"),
        (["sweep.storage=postgresql://nobody@127.0.0.1:9/nodb"], "cannot open"),
        (["sweep.search=[optim.nope:0.1:1]"], "no numeric config key"),
        (["sweep.search=[optim.weight_decay:1]"], "key:low:high"),
        (["tracking=server", "tracking.uri=http://127.0.0.1:9"], "unreachable"),
        (["sweep.storage=postgresql://me:secret@127.0.0.1/db"], "password"),
    ],
)
def test_bad_sweep_input(make_cfg, client, tmp_path, overrides, needle):
    cfg = make_cfg(*SMALL, f"sweep.storage=journal://{tmp_path}/j.log", *overrides, config="sweep")
    from dropout_risk.errors import TrackingError

    with pytest.raises((SweepError, TrackingError), match=needle) as info:
        run_sweep(cfg, log=lambda _: None)
    assert "\n" not in str(info.value)


def test_same_study_with_a_different_space_is_refused(make_cfg, tmp_path):
    cfg = _sweep_cfg(make_cfg, tmp_path, "sweep.study=space", "sweep.n_scan=2", "sweep.n_refine=0")
    open_study(cfg, create=True)  # the study as a first command created it (its trials need not run)
    other = _sweep_cfg(make_cfg, tmp_path, "sweep.study=space", "sweep.n_scan=3", "sweep.n_refine=0")
    with pytest.raises(SweepError, match="different search space.*n_scan"):
        run_sweep(other, log=lambda _: None)
    assert len(optuna.load_study(study_name="space",
                                 storage=make_storage(f"journal://{tmp_path}/journal.log")).trials) == 2


def test_worker_for_missing_study_is_refused(make_cfg, tmp_path):
    cfg = _sweep_cfg(make_cfg, tmp_path, "sweep.study=nobody", "sweep.role=worker")
    with pytest.raises(SweepError, match="does not exist"):
        run_sweep(cfg, log=lambda _: None)


_ = (io, os, TINY)
