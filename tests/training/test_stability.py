"""Sharpness during training (stability.every_n_steps) and the catapult outcome, on real runs: the
metrics and thresholds a run logs, a population member's series against the same run trained
alone, the atlas a sweep draws from them, and the edge-of-stability preset's learning rates."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import TINY

from dropout_risk.config.validate import check_pipeline
from dropout_risk.errors import ConfigError, SweepError
from dropout_risk.sweep.run import run_sweep
from dropout_risk.sweep.space import scan_lrs
from dropout_risk.tracking.names import PREDICTIONS_ARTIFACT
from dropout_risk.training.train import train
from dropout_risk.training.train_population import MemberSpec, member_config, train_population

LEAN = ("baselines=none", "mechanism.every_n_steps=0", "mechanism.grad_norm=false")
# full-batch gradient descent on 1,200 students: lr 8 is 3x 2/lambda_max(0) (~2.6)
FULL_BATCH = ("optim=sgd", "optim.momentum=0", "data.n_students=1200", "data.batch_size=100000",
              "trainer.early_stopping.enabled=false", "model.hidden=[64,32]")


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_catapult_is_its_own_outcome_and_converged_below_it_is_not(make_cfg, client):
    """Full-batch GD above 2/lambda_max(0): the loss jumps ~2x at step 3 and comes back down
    (outcome=catapult, tag catapult_step at the peak); at lr 4 (~1.5x) it only falls."""
    above = train(make_cfg(*TINY, *LEAN, *FULL_BATCH, "trainer.max_epochs=40", "optim.lr=8"))
    below = train(make_cfg(*TINY, *LEAN, *FULL_BATCH, "trainer.max_epochs=40", "optim.lr=4"))
    assert above.outcome == "catapult" and below.outcome == "converged" and below.catapult_step is None
    losses = np.asarray(above.train_loss)
    assert above.catapult_step == int(np.argmax(losses)) + 1 and losses.max() > 1.5 * losses[0]
    assert losses[above.catapult_step:].min() < losses[0]  # and came back below where it started
    run = client.get_run(above.run_id)
    assert run.data.tags["outcome"] == "catapult" and run.data.tags["catapult_step"] == str(above.catapult_step)
    assert "catapult_step" not in client.get_run(below.run_id).data.tags
    # a margin above the jump makes it an ordinary converged run
    calm = train(make_cfg(*TINY, *LEAN, *FULL_BATCH, "trainer.max_epochs=40", "optim.lr=8",
                          f"stability.catapult_margin={losses.max() / losses[0]:.3f}"))
    assert calm.outcome == "converged"


@pytest.mark.parametrize("optim, momentum, expected", [
    ("sgd", 0.0, lambda lr: 2 / lr),
    ("sgd", 0.9, lambda lr: 3.8 / lr),  # heavy ball: (2 + 2 beta) / lr
    ("adamw", None, lambda lr: 38 / lr),  # (2 + 2 beta1) / ((1 - beta1) lr), beta1 = 0.9
])
def test_a_run_logs_its_sharpness_and_threshold_every_n_steps(make_cfg, client, optim, momentum, expected):
    lr = 0.05 if optim == "sgd" else 1e-3
    extra = [f"optim.momentum={momentum}"] if momentum is not None else []
    r = train(make_cfg(*TINY, *LEAN, f"optim={optim}", f"optim.lr={lr}", *extra, "stability.every_n_steps=5"))
    n = len(r.train_loss)
    sharp = _history(client, r.run_id, "stability/sharpness")
    assert [s for s, _ in sharp] == list(range(5, n + 1, 5))
    assert all(0 < v < 100 for _, v in sharp)  # lambda_max of a BCE loss of a small MLP: positive, moderate
    thr = _history(client, r.run_id, "stability/threshold")
    assert [s for s, _ in thr] == [s for s, _ in sharp] and all(v == pytest.approx(expected(lr), rel=1e-6)
                                                                for _, v in thr)
    pre = _history(client, r.run_id, "stability/preconditioned_sharpness")
    assert (len(pre) == len(sharp)) == (optim == "adamw") and (optim == "adamw" or pre == [])
    if pre:  # Adam divides the curvature by sqrt(v) + eps, which is small: far above the raw sharpness
        assert all(p > s for (_, p), (_, s) in zip(pre, sharp, strict=True))
    saved = np.load(io.BytesIO(open(client.download_artifacts(r.run_id, PREDICTIONS_ARTIFACT), "rb").read()))
    np.testing.assert_array_equal(saved["stability_steps"], [s for s, _ in sharp])
    np.testing.assert_allclose(saved["stability_sharpness"], [v for _, v in sharp], rtol=1e-6)


def test_off_by_default_in_a_single_run(make_cfg, client):
    r = train(make_cfg(*TINY, *LEAN))
    assert client.get_metric_history(r.run_id, "stability/sharpness") == []


def test_a_members_sharpness_matches_the_same_run_trained_alone(make_cfg, client):
    """The population estimates every member's lambda_max at once (block-diagonal Hessian); a
    member's series equals the plain run's with the same lr and seed, to power-iteration accuracy."""
    base = [*TINY, *LEAN, "optim=sgd", "optim.momentum=0", "trainer.early_stopping.enabled=false",
            "stability.every_n_steps=4", "stability.iters=60", "stability.iters_per_estimate=20"]
    cfg = make_cfg(*base)
    members = train_population([MemberSpec(member_config(cfg, lr, None, f"m{i}")) for i, lr in enumerate((0.05, 0.3))])
    alone = train(make_cfg(*base, "optim.lr=0.3"))
    a = _history(client, members[1].run_id, "stability/sharpness")
    b = _history(client, alone.run_id, "stability/sharpness")
    assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 4
    np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=2e-3)
    other = _history(client, members[0].run_id, "stability/sharpness")
    assert not np.allclose([v for _, v in other], [v for _, v in a], rtol=1e-2)  # the lrs did differ


def test_a_sweep_draws_the_stability_atlas_from_its_trials(make_cfg, client, tmp_path):
    cfg = make_cfg("optim=sgd", "sweep.lr_min=0.01", "sweep.lr_max=1e4", "sweep.n_scan=3", "sweep.seeds=2",
                   "sweep.n_refine=0", "sweep.sharpness_iters=10", "data.n_students=800", "trainer.max_epochs=2",
                   "stability.every_n_steps=2", "tracking.figures=true", f"sweep.storage=journal://{tmp_path}/j.log", config="sweep")
    lines: list[str] = []
    sweep = run_sweep(cfg, log=lines.append)
    parent = sweep.parent_run_id
    files = {f.path for f in client.list_artifacts(parent, "plots")}
    assert {"plots/stability.png", "plots/stability_loss_vs_lr.png", "plots/stability_loss_vs_step.png",
            "plots/stability_sharpness_vs_step.png"} <= files
    import pandas as pd

    data = pd.read_csv(client.download_artifacts(parent, "sweep/stability.csv"))
    scan = sweep.summary[sweep.summary.phase == "scan"]
    assert list(data.lr) == sorted(scan.lr.unique()) and list(data.n_seeds) == [2, 2, 2]
    np.testing.assert_allclose(data.threshold, 2 / data.lr)  # SGD: 2/eta
    assert list(data.n_diverged) == [int((scan[scan.lr == lr].outcome == "diverged").sum()) for lr in data.lr]
    converged = data[data.n_diverged < data.n_seeds]
    assert converged.sharpness_median.notna().all()
    assert any(ln.startswith("late-training sharpness") for ln in lines)


def test_the_edge_of_stability_preset_scans_multiples_of_the_gd_threshold(make_cfg):
    cfg = make_cfg("experiment=edge_of_stability", config="sweep")
    assert list(cfg.sweep.lr_over_gd_threshold) == [1.25, 1.5, 2.0, 2.5] and cfg.optim.momentum == 0
    assert scan_lrs(cfg, lam0=0.8) == pytest.approx([3.125, 3.75, 5.0, 6.25])
    with pytest.raises(SweepError, match="needs lambda_max"):
        scan_lrs(cfg, lam0=-1.0)
    with pytest.raises(ConfigError, match="run .*python pipelines/sweep.py"):
        check_pipeline(make_cfg("experiment=edge_of_stability"), "train")
