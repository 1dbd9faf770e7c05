"""Several seeds per learning rate: the per-lr aggregate, the divergence interval, the summary's seed
column from a real Optuna study, and what report() logs on a real MLflow parent run."""

from __future__ import annotations

import io

import numpy as np
import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from dropout_risk.analysis.boundary import divergence_interval, observed_boundary, per_lr
from dropout_risk.sweep.report import PER_LR_ARTIFACT, SUMMARY_COLUMNS, report, summary_frame
from dropout_risk.tracking.run import Run

LRS = [0.001, 0.01, 0.1, 1.0, 10.0]
C, D, P, F = "converged", "diverged", "pruned", "failed"


def _scan(outcomes: list[list[str]], lrs: list[float] = LRS) -> pd.DataFrame:
    """One scan row per (lr, seed); losses only where a seed did not diverge or fail."""
    rows = []
    for lr, per_seed in zip(lrs, outcomes, strict=True):
        for seed, outcome in enumerate(per_seed):
            ok = outcome in (C, P)
            rows.append({"phase": "scan", "lr": lr, "seed": seed, "outcome": outcome,
                         "train_loss": 0.3 + 0.1 * seed if ok else np.nan,
                         "val_loss": 0.4 + 0.1 * seed if ok else np.nan,
                         "auroc": 0.8 - 0.05 * seed if ok else np.nan, "ece": 0.02 * (seed + 1) if ok else np.nan})
    return pd.DataFrame(rows)


def hand_built() -> pd.DataFrame:
    """3 seeds x 5 lrs with mixed outcomes, two failed trials, and a refine row that must not count."""
    frame = _scan([[C, C, C], [C, P, F], [C, D, C], [D, D, F], [D, D, D]])
    frame.loc[0, "val_loss"] = 0.9  # lr 0.001: val losses 0.9, 0.5, 0.6 -> median 0.6
    frame.loc[5, "val_loss"] = 5.0  # lr 0.01, seed 2 failed: a value it left behind is no result
    refine = {"phase": "refine", "lr": 0.1, "seed": 0, "outcome": D}
    return pd.concat([frame, pd.DataFrame([refine])], ignore_index=True)


def test_per_lr_counts_fractions_and_spreads() -> None:
    per = per_lr(hand_built())
    assert per.lr.tolist() == LRS
    assert per.n_seeds.tolist() == [3, 3, 3, 3, 3]  # the refine divergence at 0.1 is not a seed
    assert per.n_finished.tolist() == [3, 2, 3, 2, 3]  # failed trials say nothing about divergence
    assert per.n_diverged.tolist() == [0, 0, 1, 2, 3]
    assert per.frac_diverged.tolist() == pytest.approx([0, 0, 1 / 3, 1, 1])
    first = per.iloc[0]
    assert (first.val_loss_median, first.val_loss_min, first.val_loss_max) == pytest.approx((0.6, 0.5, 0.9))
    assert (first.train_loss_median, first.auroc_min, first.ece_max) == pytest.approx((0.4, 0.7, 0.06))
    # lr 0.01: the converged and the pruned seed (0 and 1) count, the failed one does not
    assert per.loc[1, ["val_loss_median", "val_loss_min", "val_loss_max"]].tolist() == pytest.approx([0.45, 0.4, 0.5])
    # lr 0.1: seeds 0 and 2 did not diverge; the diverged seed 1 is not in the spread
    assert per.loc[2, ["val_loss_median", "val_loss_min", "val_loss_max"]].tolist() == pytest.approx([0.5, 0.4, 0.6])
    assert per.loc[3:, ["val_loss_median", "train_loss_min", "auroc_max", "ece_median"]].isna().all().all()


def test_per_lr_edge_shapes() -> None:
    assert per_lr(hand_built().iloc[:0]).empty
    only_failed = per_lr(_scan([[F, F]], lrs=[0.5]))
    assert only_failed.n_seeds.tolist() == [2] and only_failed.n_finished.tolist() == [0]
    assert np.isnan(only_failed.frac_diverged[0])
    minimal = per_lr(pd.DataFrame({"lr": [0.2, 0.1, 0.2], "outcome": [C, D, D]}))  # no phase, no metrics
    assert minimal.lr.tolist() == [0.1, 0.2] and minimal.frac_diverged.tolist() == [1.0, 0.5]
    assert minimal.val_loss_median.isna().all()
    noisy = per_lr(pd.DataFrame({"lr": [0.1, 0.1 * (1 + 1e-15)], "outcome": [C, D]}))  # one grid point
    assert noisy.n_seeds.tolist() == [2] and noisy.lr.tolist() == [0.1]
    grid = np.logspace(-4, 1, 24)[7]  # a trial's own lr comes back exactly, not rounded
    assert per_lr(pd.DataFrame({"lr": [grid, grid], "outcome": [C, D]})).lr.tolist() == [grid]
    with pytest.raises(ValueError, match="per_lr: summary lacks column"):
        per_lr(pd.DataFrame({"lr": [0.1]}))


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([[C, C, C], [C, C, C], [C, C, C], [D, D, D], [D, D, D]], (0.1, 1.0)),  # clean step
        ([[C, C, C], [C, C, C], [C, D, C], [D, C, D], [D, D, D]], (0.01, 10.0)),  # mixed zone
        ([[C, C, C]] * 5, (10.0, None)),  # nothing diverged
        ([[D, D, D]] * 5, (None, 0.001)),  # everything diverged
        # non-monotone: a stray divergence at 0.01 below converged lrs pulls lo below it;
        # a seed converging at 1.0 above a fully diverged 0.1 pushes hi above it
        ([[C, C, C], [C, D, C], [C, C, C], [D, C, D], [D, D, D]], (0.001, 10.0)),
        ([[C, C, C], [C, C, C], [D, D, D], [C, D, D], [D, D, D]], (0.01, 10.0)),
        ([[D, C, C], [C, C, C], [C, C, C], [C, C, C], [D, D, D]], (None, 10.0)),  # diverged at the smallest lr
        ([[C, C, C], [C, C, C], [C, C, C], [C, C, C], [C, D, C]], (1.0, None)),  # no lr where all diverged
        ([[C, C, C], [F, F, F], [C, C, C], [D, F, D], [D, D, D]], (0.1, 1.0)),  # all-failed lr: no evidence
        ([[C, C, C], [C, P, C], [C, C, C], [D, D, D], [D, D, D]], (0.1, 1.0)),  # pruned is not diverged
    ],
)
def test_divergence_interval(outcomes: list[list[str]], expected: tuple) -> None:
    assert divergence_interval(_scan(outcomes)) == expected


def test_divergence_interval_on_the_hand_built_frame_and_with_one_seed() -> None:
    assert divergence_interval(hand_built()) == (0.01, 1.0)
    assert divergence_interval(hand_built().iloc[:0]) == (None, None)
    one_seed = _scan([[C], [C], [C], [D], [D]])
    assert divergence_interval(one_seed) == observed_boundary(one_seed) == (0.1, 1.0)


def _trial(lr: float, outcome: str, seed: int | None, val_loss: float | None = None) -> optuna.trial.FrozenTrial:
    attrs = {"phase": "scan", "outcome": outcome, "lr_planned": lr, "val_loss": val_loss,
             "train_loss": None if val_loss is None else val_loss - 0.05, "auroc": None if val_loss is None else 0.8,
             "ece": None if val_loss is None else 0.03, "run_id": None,
             "diverged_at_step": 7 if outcome == D else None, **({} if seed is None else {"seed": seed})}
    state = TrialState.COMPLETE if outcome == C else TrialState.FAIL
    return create_trial(params={"lr": lr}, distributions={"lr": FloatDistribution(1e-4, 100.0, log=True)},
                        value=val_loss if outcome == C else None, state=state, user_attrs=attrs)


def _study(trials: list[optuna.trial.FrozenTrial]) -> optuna.Study:
    study = optuna.create_study(direction="minimize")
    for t in trials:
        study.add_trial(t)
    return study


def seeded_study() -> optuna.Study:
    """4 lrs x 3 seeds: lr 0.01 clean, 0.1 one seed diverged, 1 two of three, 10 all."""
    pattern = {0.01: [C, C, C], 0.1: [C, D, C], 1.0: [D, C, D], 10.0: [D, D, D]}
    return _study([_trial(lr, o, seed, 0.4 + 0.01 * seed if o == C else None)
                   for lr, outcomes in pattern.items() for seed, o in enumerate(outcomes)])


def test_summary_frame_has_a_seed_column() -> None:
    study = _study([_trial(0.01, C, 0, 0.4), _trial(0.01, C, 1, 0.5), _trial(0.1, D, 2), _trial(1.0, C, None, 0.6)])
    frame = summary_frame(study)
    assert list(frame.columns) == SUMMARY_COLUMNS and SUMMARY_COLUMNS.index("seed") == SUMMARY_COLUMNS.index("lr") + 1
    assert str(frame.seed.dtype) == "Int64"
    assert frame.seed.tolist()[:3] == [0, 1, 2] and frame.seed.isna().tolist() == [False, False, False, True]
    assert frame.outcome.tolist() == [C, C, D, C] and frame.lr.tolist() == [0.01, 0.01, 0.1, 1.0]
    assert per_lr(frame).n_seeds.tolist() == [2, 1, 1]


def _report(store, study: optuna.Study) -> tuple[dict, pd.DataFrame]:
    cfg = OmegaConf.create({"optim": {"_target_": "torch.optim.AdamW"}, "tracking": {"figures": True}})
    run = Run.start(store["uri"], "seed-summary", store["artifacts"], "parent")
    report(cfg, study, run)
    metrics = run.client.get_run(run.run_id).data.metrics
    local = run.client.download_artifacts(run.run_id, PER_LR_ARTIFACT)
    with open(local) as f:
        return metrics, pd.read_csv(io.StringIO(f.read()))


def test_report_logs_the_interval_and_the_per_lr_table(store) -> None:
    metrics, per = _report(store, seeded_study())
    assert metrics["boundary/all_converged_lr_max"] == pytest.approx(0.01)
    assert metrics["boundary/all_diverged_lr_min"] == pytest.approx(10.0)
    assert metrics["boundary/n_seeds"] == 3 and metrics["boundary/mixed_lrs"] == 2
    assert metrics["boundary/smallest_diverged_lr"] == pytest.approx(0.1)  # the per-trial metrics stay
    assert metrics["n_trials"] == 12 and metrics["n_diverged"] == 6
    assert per.lr.tolist() == pytest.approx([0.01, 0.1, 1.0, 10.0])
    assert per.frac_diverged.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert per.val_loss_median.tolist()[:3] == pytest.approx([0.41, 0.41, 0.41])


def test_report_on_a_study_without_seeds(store) -> None:
    """An older study: one trial per lr and no seed attribute; everything still reports."""
    study = _study([_trial(lr, o, None, 0.4 if o == C else None)
                    for lr, o in ((0.01, C), (0.1, C), (1.0, D), (10.0, D))])
    metrics, per = _report(store, study)
    assert metrics["boundary/largest_converged_lr"] == pytest.approx(0.1)
    assert metrics["boundary/all_converged_lr_max"] == pytest.approx(0.1)
    assert metrics["boundary/all_diverged_lr_min"] == pytest.approx(1.0)
    assert metrics["boundary/n_seeds"] == 1 and metrics["boundary/mixed_lrs"] == 0
    assert per.n_seeds.tolist() == [1, 1, 1, 1]


def test_report_leaves_out_interval_ends_that_do_not_exist(store) -> None:
    study = _study([_trial(lr, C, seed, 0.4) for lr in (0.01, 0.1) for seed in (0, 1)])
    metrics, _ = _report(store, study)
    assert metrics["boundary/all_converged_lr_max"] == pytest.approx(0.1)
    assert "boundary/all_diverged_lr_min" not in metrics and metrics["boundary/mixed_lrs"] == 0
    assert metrics["boundary/n_seeds"] == 2
