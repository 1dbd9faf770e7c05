"""Metrics: hand-computed ECE, calibrated vs miscalibrated predictors, sklearn agreement, edge cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from dropout_risk.analysis.metrics import (
    BINARY_METRIC_KEYS,
    TRUTH_METRIC_KEYS,
    bayes_metrics,
    binary_metrics,
    ece,
    mce,
    truth_metrics,
)

# four points, no value on a bin edge: 15 equal-width bins put 0.1 in bin 1, 0.3 and 0.32 in bin 4,
# 0.9 in bin 13. ECE = 1/4*|0-0.1| + 2/4*|0.5-0.31| + 1/4*|1-0.9| = 0.145, MCE = 0.19.
Y_TINY = np.array([0, 1, 0, 1])
P_TINY = np.array([0.1, 0.3, 0.32, 0.9])


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    return (rng.uniform(size=n) < p).astype(np.int64), p


def test_ece_and_mce_hand_computed() -> None:
    assert ece(Y_TINY, P_TINY) == pytest.approx(0.145, abs=1e-12)
    assert mce(Y_TINY, P_TINY) == pytest.approx(0.19, abs=1e-12)
    # two equal-mass bins: {0.1, 0.3} -> |0.5 - 0.2| = 0.3 and {0.32, 0.9} -> |0.5 - 0.61| = 0.11
    assert ece(Y_TINY, P_TINY, n_bins=2, strategy="quantile") == pytest.approx(0.205, abs=1e-12)


def test_ece_endpoints_and_perfect_confident_predictions() -> None:
    assert ece([0, 1, 1], [0.0, 1.0, 1.0]) == 0.0  # p == 1.0 lands in the last bin, p == 0 in the first
    assert ece([1, 0], [0.0, 1.0]) == pytest.approx(1.0)
    assert isinstance(ece([1, 0], [0.0, 1.0]), float)


def test_calibrated_predictor_has_small_ece() -> None:
    y, p = _calibrated(200_000, seed=0)
    m = binary_metrics(y, p)
    assert m["ece"] < 0.01
    assert m["ece_adaptive"] < 0.01
    assert m["mce"] < 0.03


def test_miscalibrated_predictor_has_large_ece() -> None:
    y, p = _calibrated(200_000, seed=1)
    m = binary_metrics(y, p**0.3)  # pushes every probability up: over-predicts risk
    assert m["ece"] > 0.2
    assert m["ece_adaptive"] > 0.2
    assert m["mce"] > m["ece"]


def test_binary_metrics_match_sklearn() -> None:
    y, p = _calibrated(5_000, seed=2)
    m = binary_metrics(y, p)
    assert tuple(m) == BINARY_METRIC_KEYS
    assert all(type(v) is float for v in m.values())
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert m["auprc"] == pytest.approx(average_precision_score(y, p), rel=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), rel=1e-12)
    assert m["accuracy"] == pytest.approx(np.mean((p > 0.5) == y), rel=1e-12)
    assert m["ece"] == pytest.approx(ece(y, p))
    assert m["ece_adaptive"] == pytest.approx(ece(y, p, strategy="quantile"))


@pytest.mark.parametrize("decimals", [None, 2, 1, 0])
@pytest.mark.parametrize("seed", range(5))
def test_ranking_metrics_match_sklearn_with_ties(decimals, seed) -> None:
    """AUROC and AUPRC come from one sort of our own: they must equal sklearn's, ties included
    (rounding the scores makes many; decimals=0 leaves only the scores 0 and 1)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 400))
    p = rng.random(n)
    y = (rng.random(n) < p).astype(int)
    y[:2] = [0, 1]  # both classes present
    if decimals is not None:
        p = np.round(p, decimals)
    m = binary_metrics(y, p)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p), rel=1e-12, abs=1e-15)
    assert m["auprc"] == pytest.approx(average_precision_score(y, p), rel=1e-12, abs=1e-15)


def test_log_loss_clips_hard_zero_and_one() -> None:
    m = binary_metrics([1, 0], [0.0, 1.0])
    assert math.isfinite(m["log_loss"])
    assert m["log_loss"] == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_single_class_gives_nan_ranking_metrics_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = binary_metrics(np.zeros(6, dtype=int), [0.1, 0.2, 0.3, 0.4, 0.6, 0.9])
    assert math.isnan(m["auroc"]) and math.isnan(m["auprc"])
    assert m["accuracy"] == pytest.approx(4 / 6)  # 0.6 and 0.9 are predicted positive
    assert all(math.isfinite(m[k]) for k in ("log_loss", "brier", "ece", "ece_adaptive", "mce"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_predictions_give_all_nan(bad: float) -> None:
    m = binary_metrics([0, 1, 1], [0.2, bad, 0.7])
    assert tuple(m) == BINARY_METRIC_KEYS
    assert all(math.isnan(v) for v in m.values())


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 1, 1], [0.2, 0.7], "same length"),
        ([], [], "empty"),
        ([0, 1], [0.2, 1.5], r"\[0, 1\]"),
        ([0, 1], [-0.1, 0.5], r"\[0, 1\]"),
        ([0, 2], [0.2, 0.5], "only 0 and 1"),
        ([0, 1], [[0.2, 0.5], [0.1, 0.3]], "1-D"),
    ],
)
def test_bad_input_raises_one_line_value_error(y: list, p: list, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        binary_metrics(y, p)
    assert "\n" not in str(info.value)


def test_ece_rejects_non_finite_predictions() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        ece([0, 1], [0.5, np.nan])


def test_column_vectors_are_accepted() -> None:
    y, p = _calibrated(500, seed=3)
    assert binary_metrics(y[:, None], p[:, None]) == binary_metrics(y, p)


def test_truth_metrics_of_the_true_probability_are_zero() -> None:
    y, p = _calibrated(20_000, seed=4)
    m = truth_metrics(y, p, p_true=p)
    assert tuple(m) == TRUTH_METRIC_KEYS
    assert m["ece_true"] == 0.0 and m["mae_true"] == 0.0 and m["excess_log_loss"] == 0.0
    assert m["log_loss_bayes"] == pytest.approx(log_loss(y, p))
    assert m["auroc_bayes"] == pytest.approx(roc_auc_score(y, p))
    assert bayes_metrics(y, p) == {k: m[k] for k in ("log_loss_bayes", "auroc_bayes")}


def test_truth_metrics_of_a_distorted_predictor() -> None:
    y, p_true = _calibrated(50_000, seed=5)
    p = p_true**0.3
    m = truth_metrics(y, p, p_true)
    assert m["ece_true"] > 0.2
    assert m["mae_true"] == pytest.approx(np.mean(np.abs(p - p_true)))
    assert m["excess_log_loss"] > 0.05
    # a monotone distortion keeps the ranking: same AUROC as the truth
    assert binary_metrics(y, p)["auroc"] == pytest.approx(m["auroc_bayes"])


def test_truth_metrics_with_diverged_model_keep_bayes_metrics() -> None:
    y, p_true = _calibrated(1_000, seed=6)
    m = truth_metrics(y, np.full(y.size, np.nan), p_true)
    assert all(math.isnan(m[k]) for k in ("ece_true", "mae_true", "excess_log_loss"))
    assert math.isfinite(m["log_loss_bayes"]) and math.isfinite(m["auroc_bayes"])


def test_truth_metrics_reject_bad_p_true() -> None:
    with pytest.raises(ValueError, match="p_true"):
        truth_metrics([0, 1], [0.2, 0.7], [0.2, np.nan])
    with pytest.raises(ValueError, match="p_true"):
        truth_metrics([0, 1], [0.2, 0.7], [0.2])
