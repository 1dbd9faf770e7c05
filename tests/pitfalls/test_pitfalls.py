"""The pitfall presets at tiny sizes: each shows its phenomenon in numbers, links the pitfall run
to its healthy counterpart and ends with a comparison and an explanation computed from the runs."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from helpers import run_pipeline
from scipy.stats import spearmanr

from dropout_risk.config.validate import check_pipeline
from dropout_risk.errors import ConfigError
from dropout_risk.pitfalls.run import counterpart_config, run_sweep_pitfall, run_train_pitfall
from dropout_risk.sweep.run import run_sweep
from dropout_risk.training.train import RunResult

# What these tests do not read (the lab page, the flow and calibration figures, the baselines).
PITFALL_LEAN = ("mechanism.page=false", "mechanism.figure=false", "calibration.figure=false", "baselines=none",
                "tracking.figures=false")


def _pitfall(make_cfg, tmp_path, preset: str, *overrides: str):
    cfg = make_cfg(f"experiment={preset}", f"pitfall.out_dir={tmp_path}/cmp", *PITFALL_LEAN, *overrides, tiny=False)
    return run_train_pitfall(cfg, echo=lambda _: None)


def _check_linked(client, result, name: str) -> None:
    bad, good = client.get_run(result.pitfall_run_id), client.get_run(result.healthy_run_id)
    assert bad.data.tags["counterpart"] == good.info.run_id and good.data.tags["counterpart"] == bad.info.run_id
    assert bad.data.tags["pitfall_role"] == "pitfall" and good.data.tags["pitfall_role"] == "healthy"
    assert bad.data.tags["pitfall"] == good.data.tags["pitfall"] == name
    assert bad.data.params["seed"] == good.data.params["seed"]
    assert bad.data.tags["data_fingerprint"] == good.data.tags["data_fingerprint"]
    # the side-by-side comparison, logged as its own run, with the explanation
    files = {p.name for p in result.comparison.out_dir.iterdir()}
    assert {"reliability_grid.png", "loss_curves.png", "comparison.md", "explanation.md"} <= files
    comparison = client.get_run(result.comparison.comparison_run_id)
    assert set(comparison.data.tags["comparison_of"].split(",")) == {bad.info.run_id, good.info.run_id}
    assert "explanation.md" in {f.path for f in client.list_artifacts(comparison.info.run_id)}
    assert (result.comparison.out_dir / "explanation.md").read_text().count("\n- ") == len(result.explanation)


def _metric(client, run_id: str, key: str) -> list[float]:
    """One value per step (the final val/* metrics are logged again at the last epoch's step)."""
    by_step = {m.step: m.value for m in client.get_metric_history(run_id, key)}
    return [by_step[s] for s in sorted(by_step)]


def test_no_zero_grad_gradients_pile_up(make_cfg, client, tmp_path) -> None:
    result = _pitfall(make_cfg, tmp_path, "pitfall_no_zero_grad",
                      "data.n_students=6000", "data.batch_size=64", "trainer.max_epochs=5")
    _check_linked(client, result, "no_zero_grad")
    bad, good = client.get_run(result.pitfall_run_id), client.get_run(result.healthy_run_id)
    assert bad.data.params["optim.zero_grad"] == "False" and good.data.params["optim.zero_grad"] == "True"
    assert bad.data.params["optim.lr"] == good.data.params["optim.lr"]
    g_bad, g_good = (np.array(_metric(client, r, "train/grad_norm")) for r in (result.pitfall_run_id,
                                                                             result.healthy_run_id))
    assert g_bad[0] == pytest.approx(g_good[0])  # the same first step: nothing has accumulated yet
    # accumulated gradients: large and growing, within and across epochs
    assert g_bad.max() > 5 * g_bad[0]
    assert np.median(g_bad[-50:]) > 5 * np.median(g_good[-50:])
    assert spearmanr(np.arange(len(g_bad)), g_bad).statistic > 0.5
    # and the training goes worse than with zero_grad at the same learning rate
    assert bad.data.metrics["train/loss_epoch"] > good.data.metrics["train/loss_epoch"] + 0.05
    assert bad.data.metrics["val/log_loss"] > good.data.metrics["val/log_loss"]
    # the per-layer gradients pile up too (mechanism metrics, every 10 steps in this preset)
    l1_bad, l1_good = (_metric(client, r, "mechanism/grad/l1") for r in (result.pitfall_run_id, result.healthy_run_id))
    assert len(l1_bad) == len(l1_good) == math.ceil(len(g_bad) / 10)
    assert l1_bad[-1] > 3 * l1_good[-1]
    # the explanation quotes the measured numbers
    assert f"{g_bad[0]:.3g}" in result.explanation[0] and f"{g_bad.max():.3g}" in result.explanation[0]


def test_loss_only_validation_turns_while_training_falls(make_cfg, client, tmp_path) -> None:
    result = _pitfall(make_cfg, tmp_path, "pitfall_loss_only", "data.n_students=1500", "trainer.max_epochs=40")
    _check_linked(client, result, "loss_only")
    train_epoch = np.array(_metric(client, result.pitfall_run_id, "train/loss_epoch"))
    val = np.array(_metric(client, result.pitfall_run_id, "val/log_loss"))
    ece = np.array(_metric(client, result.pitfall_run_id, "val/ece"))
    assert len(train_epoch) == len(val) == 40
    # training loss falls monotonically within noise...
    assert spearmanr(np.arange(40), train_epoch).statistic < -0.9
    assert train_epoch[-1] < 0.6 * train_epoch[0]
    # ...while validation log loss has its minimum well before the end and then climbs
    best = int(np.argmin(val)) + 1
    assert best < 30 and val[-1] > 1.1 * val[best - 1]
    assert ece[-1] > ece[best - 1]
    # the counterpart is the same run stopped at that epoch: same seed, same trajectory
    healthy = client.get_run(result.healthy_run_id)
    assert healthy.data.params["trainer.max_epochs"] == str(best)
    assert healthy.data.metrics["val/log_loss"] == pytest.approx(val[best - 1], rel=1e-6)
    assert f"lowest at epoch {best}" in result.explanation[1]
    m = client.get_run(result.pitfall_run_id).data.metrics
    assert m["best_val_epoch"] == best and m["val/log_loss_best"] == pytest.approx(val[best - 1])
    # temperature scaling of the overfitted model is reported, and it helps
    assert m["val/log_loss_calibrated"] < m["val/log_loss"]
    assert "Temperature scaling" in result.explanation[2]


def test_lr_divergence_preset_has_a_diverged_trial(make_cfg, client, tmp_path) -> None:
    cfg = make_cfg("experiment=pitfall_lr_divergence", "sweep.n_scan=4", "sweep.seeds=2", "sweep.lr_min=0.01",
                   "sweep.lr_max=1e4", "data.n_students=1000", "trainer.max_epochs=3", "tracking.figures=false",
                   f"sweep.storage=journal://{tmp_path}/j.log",
                   f"pitfall.out_dir={tmp_path}/cmp", tiny=False, config="sweep")
    assert cfg.optim._target_ == "torch.optim.SGD" and cfg.sweep.n_refine == 0
    sweep = run_sweep(cfg, log=lambda _: None)
    scan = sweep.summary[sweep.summary.phase == "scan"]
    assert (scan.outcome == "diverged").sum() >= 1 and (scan.outcome == "converged").sum() >= 1
    result = run_sweep_pitfall(cfg, sweep)
    _check_linked(client, result, "lr_divergence")
    bad, good = client.get_run(result.pitfall_run_id), client.get_run(result.healthy_run_id)
    assert bad.data.tags["outcome"] == "diverged" and good.data.tags["outcome"] == "converged"
    assert float(good.data.params["optim.lr"]) < float(bad.data.params["optim.lr"])
    assert f"step {bad.data.tags['diverged_at_step']}" in " ".join(result.explanation)


def test_presets_run_from_their_own_pipeline(make_cfg) -> None:
    with pytest.raises(ConfigError, match="python pipelines/sweep.py experiment=pitfall_lr_divergence") as info:
        check_pipeline(make_cfg("experiment=pitfall_lr_divergence"), "train")
    # runs as printed: this venv's python and the script, from the working folder
    import shlex
    from pathlib import Path

    command = shlex.split(str(info.value).split(": run ", 1)[1])
    assert Path(command[0]).resolve() == Path(sys.executable).resolve() and Path(command[1]).is_file()
    assert command[2:] == ["experiment=pitfall_lr_divergence"]
    with pytest.raises(ConfigError, match="python pipelines/train.py experiment=pitfall_no_zero_grad"):
        check_pipeline(make_cfg("experiment=pitfall_no_zero_grad", config="sweep"), "sweep")
    check_pipeline(make_cfg(), "train")  # an ordinary run is no preset


def test_counterpart_overrides_are_checked(make_cfg) -> None:
    result = RunResult("r", "n", "0", "converged", None, {}, val_history=[{"val/log_loss": v} for v in (3, 1, 2)])
    cfg = make_cfg("experiment=pitfall_loss_only", tiny=False)
    healthy, applied = counterpart_config(cfg, result)
    assert applied == ["trainer.max_epochs=2"] and healthy.trainer.max_epochs == 2 and cfg.trainer.max_epochs == 100
    cfg.pitfall.counterpart = ["trainer.max_epoch=3"]
    with pytest.raises(Exception, match="max_epoch"):
        counterpart_config(cfg, result)
    cfg.pitfall.counterpart = ["+extra=1"]
    with pytest.raises(ConfigError, match="plain key=value"):
        counterpart_config(cfg, result)


@pytest.mark.slow  # a second process of pipelines/train.py (tests/cli has the fast one)
def test_pitfall_from_the_command_line(store, tmp_path) -> None:
    proc = run_pipeline("train.py", "experiment=pitfall_no_zero_grad", "data.n_students=2000",
                        "trainer.max_epochs=2", f"tracking.uri={store['uri']}",
                        f"tracking.artifact_location={store['artifacts']}", f"pitfall.out_dir={tmp_path}/cmp",
                        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "what the numbers show:" in out and "pitfall run_id: " in out and "healthy run_id: " in out
    assert "comparison run_id: " in out
    wrong = run_pipeline("train.py", "experiment=pitfall_lr_divergence", f"tracking.uri={store['uri']}", cwd=tmp_path)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1].startswith("error: experiment=pitfall_lr_divergence is a sweep preset")
