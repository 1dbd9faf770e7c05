"""What the pipelines print fits 100 columns, and a sweep's trial has one number everywhere.

One small sweep (SGD, some learning rates diverge, baselines fitted) is run
in-process; its live lines, its printed summary, a reproduction of its best trial and a
comparison of its trials are checked line by line; so is a train run's printed summary. The
trial number (Optuna's, from 0) must be the same in the live line, the summary table, the run
name, the `trial` tag, the "best trial" line and reproduce's message."""

from __future__ import annotations

import contextlib
import io
import shlex
from types import SimpleNamespace

import pytest
from helpers import CONF, TINY
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from dropout_risk.cli.printing import print_run_summary, print_sweep_summary, sweep_table
from dropout_risk.compare.request import compose_compare_config
from dropout_risk.compare.run import run_compare
from dropout_risk.console import WIDTH, fit, fit_command
from dropout_risk.reproduce.run import run_reproduce, trials_table
from dropout_risk.reproduce.verdict import Reproduction
from dropout_risk.sweep.run import run_sweep
from dropout_risk.tracking.names import TRIAL_NAME
from dropout_risk.training.train import train

# One population of five scan trials (the refine phase prints the same line); no sharpness during
# training (the atlas's printed lines are fit() like the rest): ~4 s
SWEEP = ["optim=sgd", "sweep.lr_min=0.01", "sweep.lr_max=1e4", "sweep.n_scan=5", "sweep.n_refine=0",
         "sweep.seeds=1", "sweep.sharpness_iters=10", "stability.every_n_steps=0", "data.n_students=600",
         "trainer.max_epochs=2", "sweep.study=width"]


def _lines(*texts: str) -> list[str]:
    return "\n".join(texts).splitlines()


def _too_wide(lines: list[str]) -> list[str]:
    return [f"{len(ln)}: {ln}" for ln in lines if len(ln) > WIDTH]


def _compose(store, *overrides: str, config: str = "config"):
    base = [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config, overrides=[*TINY, *base, *overrides])


@pytest.fixture(scope="module")
def swept(tmp_path_factory, new_store):
    """The sweep, in a store of its own: (store, result, live lines, printed summary)."""
    root = tmp_path_factory.mktemp("width")
    store = new_store(root / "mlruns")
    cfg = _compose(store, *SWEEP, f"sweep.storage=journal://{root}/journal.log", config="sweep")
    live: list[str] = []
    result = run_sweep(cfg, log=live.append)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        print_sweep_summary(result, cfg)
    return store, result, _lines(*live), printed.getvalue().splitlines()


def test_a_sweeps_lines_fit_and_its_best_trial_has_one_number(swept):
    store, result, live, printed = swept
    assert not _too_wide(live) and not _too_wide(printed), _too_wide(live + printed)
    assert sum(ln.startswith("[trial ") for ln in live) == 5
    assert any(", step " in ln for ln in printed)  # a diverged trial's step, in the outcome column
    assert any(ln.startswith("best trial - ") for ln in printed)  # the verdict against the baselines

    n = result.best_trial
    client = MlflowClient(store["uri"])
    best = client.get_run(client.get_run(result.parent_run_id).data.tags["best_run_id"])
    assert best.data.tags["trial"] == str(n)
    assert TRIAL_NAME.match(best.info.run_name) and int(best.info.run_name.split("-")[1]) == n
    lr = f"{float(best.data.params['optim.lr']):.4g}"
    [line] = [ln for ln in live if ln.startswith(f"[trial {n} ")]
    assert f"lr={lr} " in line and " converged val_loss=" in line
    rows = [ln.split() for ln in printed if ln.split()[:1] == [str(n)]]
    assert len(rows) == 1 and rows[0][2] == lr and rows[0][4] == "converged"
    assert any(ln.startswith(f"best trial: {n} (lr ") for ln in printed)
    # the live lines number every trial as the table does: the same set of numbers
    assert {int(ln.split()[1]) for ln in live if ln.startswith("[trial ")} == set(result.summary.trial)


def test_reproduce_and_compare_print_lines_that_fit(swept, tmp_path):
    store, result, _, _ = swept
    out, err = io.StringIO(), io.StringIO()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        req = compose("reproduce", overrides=[f"tracking.uri={store['uri']}", f"run_id={result.parent_run_id}"])
    with contextlib.redirect_stderr(err):
        run_reproduce(req, echo=lambda text: out.write(text + "\n"))
    lines = _lines(out.getvalue(), err.getvalue())
    assert not _too_wide(lines), _too_wide(lines)
    assert f"re-running its best trial {result.best_trial} (" in out.getvalue().replace("\n    ", " ")

    cfg = compose_compare_config([f"sweep={result.parent_run_id}", f"tracking.uri={store['uri']}",
                                  f"out_dir={tmp_path}/cmp", "log_to_mlflow=false"])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        run_compare(cfg, echo=lambda text: out.write(text + "\n"))
    lines = _lines(out.getvalue(), err.getvalue())
    assert not _too_wide(lines), _too_wide(lines)
    table = [ln for ln in lines if ln.startswith("|")]
    assert len(table) == 2 + 5 and "| outcome " in table[0] and "| val AUROC |" in table[0]
    assert f"full table: {tmp_path}/cmp/comparison.md" in " ".join(out.getvalue().split())
    wide = (tmp_path / "cmp" / "comparison.md").read_text().splitlines()
    assert max(map(len, wide)) > WIDTH  # the files keep every column


def test_a_train_runs_summary_fits(store, capsys):
    cfg = _compose(store, "data.n_students=600")
    result = train(cfg)
    capsys.readouterr()
    print_run_summary(result, cfg)
    lines = capsys.readouterr().out.splitlines()
    assert not _too_wide(lines), _too_wide(lines)
    assert any(ln.startswith("auroc ") for ln in lines) and any(ln.startswith("hint: ") for ln in lines)
    assert any(ln.startswith("MLP - ") for ln in lines) and any(ln.startswith("run_id: ") for ln in lines)


def test_fit_wraps_with_a_hanging_indent_and_keeps_every_word():
    text = "verdict: " + ", ".join(f"metric_{i} 0.{i:04d}" for i in range(30))
    lines = fit(text).splitlines()
    assert len(lines) > 1 and all(len(ln) <= WIDTH for ln in lines)
    assert all(ln.startswith("    ") for ln in lines[1:])
    assert " ".join(ln.strip() for ln in lines) == text
    assert fit("  - " + "word " * 40, indent="  ").splitlines()[1].startswith("    word")
    assert fit("short line") == "short line"
    held = fit("x" * 90 + " (3.82e+03\xa0x\xa02/lambda_max)").splitlines()  # NBSP: not broken there, a space
    assert held == ["x" * 90, "    (3.82e+03 x 2/lambda_max)"]
    long_path = "/" + "x" * 120
    assert fit(f"output: {long_path}").splitlines() == ["output:", f"    {long_path}"]  # never cut


def test_a_long_command_wraps_so_that_it_still_runs():
    command = ("/a/venv/bin/mlflow ui --backend-store-uri sqlite:////tmp/" + "d" * 60 + "/mlflow.db "
               "--host 127.0.0.1 --port 5000")
    lines = fit_command("MLflow UI:", command).splitlines()
    assert len(lines) > 1 and all(len(ln) <= WIDTH for ln in lines)
    assert all(ln.endswith(" \\") for ln in lines[:-1])
    joined = "\n".join(lines).removeprefix("MLflow UI: ")
    assert shlex.split(joined.replace(" \\\n", " ")) == shlex.split(command)
    assert fit_command("MLflow UI:", "mlflow ui --port 5000") == "MLflow UI: mlflow ui --port 5000"
    prose = "open http://h:5000 in a browser (a tracking server is already serving the UI) " * 2
    assert all(len(ln) <= WIDTH for ln in fit_command("MLflow UI:", prose).splitlines())


def test_the_printed_sweep_table_drops_columns_only_when_it_must():
    import pandas as pd

    def row(**kw):
        return {"trial": 0, "phase": "scan", "lr": 0.0007713, "seed": 2, "outcome": "converged",
                "diverged_at_step": None, "train_loss": 0.3612, "val_loss": 0.3675, "auroc": 0.8691, "ece": 0.009869,
                "brier": 0.1131, "duration_s": 10.57, "run_id": "0" * 32, **kw}

    wide = [row(trial=79, phase="refine", lr=1.234e-05), row(trial=48, outcome="diverged", diverged_at_step=12,
                                                             train_loss=2.255e05, val_loss=12.3)]
    table, dropped = sweep_table(pd.DataFrame(wide))
    assert dropped == [] and max(map(len, table.splitlines())) <= WIDTH
    assert "diverged, step 12" in table and "0" * 32 not in table
    assert table.splitlines()[0].split() == ["trial", "phase", "lr", "seed", "outcome", "train_loss", "val_loss",
                                             "auroc", "ece", "brier", "time_s"]
    extreme = [*wide, row(trial=12345, outcome="diverged", diverged_at_step=12345, val_loss=1.234e04)]
    table, dropped = sweep_table(pd.DataFrame(extreme))
    assert dropped == ["brier"] and max(map(len, table.splitlines())) <= WIDTH


def test_reproduces_trials_table_fits_and_shows_the_trial_tag():
    trials = [SimpleNamespace(info=SimpleNamespace(run_id=f"orig{i}", run_name=name), data=SimpleNamespace(
        tags={"trial": str(i)})) for i, name in ((7, "scan-07-lr0.00122-s2"), (48, "scan-48-lr0.301-s0-diverged"))]
    reps = [Reproduction(f"orig{i}", "f" * 32, "within_tolerance", [], weights_identical=False) for i in (7, 48)]
    lines = trials_table(reps, trials).splitlines()
    assert lines[0].split()[:3] == ["trial", "run", "name"] and all(len(ln) <= WIDTH for ln in lines)
    assert [ln.split()[:2] for ln in lines[1:]] == [["7", "scan-07-lr0.00122-s2"], ["48", "scan-48-lr0.301-s0-diverged"]]

