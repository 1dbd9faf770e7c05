"""Metrics: the cases mutation testing showed unguarded (docs/testing.md): n_bins reaching every
binned metric, the 0.5 accuracy threshold, p_true named in errors, and +-inf predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dropout_risk.analysis.calibration import probs_to_logits, sigmoid
from dropout_risk.analysis.metrics import (
    TRUTH_METRIC_KEYS,
    bayes_metrics,
    binary_metrics,
    ece,
    mce,
    truth_metrics,
)


def _distorted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p_true = rng.uniform(size=n)
    y = (rng.uniform(size=n) < p_true).astype(int)
    return y, p_true**0.5, p_true


def test_n_bins_reaches_every_binned_metric() -> None:
    y, p, p_true = _distorted(3000, seed=11)
    m = binary_metrics(y, p, n_bins=4)
    assert m["ece"] == ece(y, p, n_bins=4)
    assert m["ece_adaptive"] == ece(y, p, n_bins=4, strategy="quantile")
    assert m["mce"] == mce(y, p, n_bins=4)
    # and the 4-bin values are not the 15-bin ones, so the check above can fail
    default = binary_metrics(y, p)
    assert m["ece"] != default["ece"] and m["ece_adaptive"] != default["ece_adaptive"]
    t4, t15, t_default = truth_metrics(y, p, p_true, n_bins=4), truth_metrics(y, p, p_true, n_bins=15), truth_metrics(y, p, p_true)
    assert t4["ece_true"] != t15["ece_true"] and t_default["ece_true"] == t15["ece_true"]


def test_ece_true_defaults_to_15_bins() -> None:
    # p_true ** 0.5 above is never below p_true, so its ece_true is mae_true whatever the bins;
    # an overconfident predictor errs both ways: 15 bins put one bin across 0.5, where the errors
    # cancel, while 16 bins have an edge at 0.5
    _, _, p_true = _distorted(3000, seed=11)
    y = (np.random.default_rng(5).uniform(size=p_true.size) < p_true).astype(int)
    p = sigmoid(2.0 * probs_to_logits(p_true))
    default = truth_metrics(y, p, p_true)["ece_true"]
    assert default == truth_metrics(y, p, p_true, n_bins=15)["ece_true"]
    assert default != truth_metrics(y, p, p_true, n_bins=16)["ece_true"]
    assert default < truth_metrics(y, p, p_true)["mae_true"]


def test_a_prediction_of_exactly_one_half_is_negative() -> None:
    assert binary_metrics([0, 1], [0.5, 0.5])["accuracy"] == 0.5
    assert binary_metrics([0, 0, 1], [0.5, 0.2, 0.9])["accuracy"] == 1.0


def test_bayes_metrics_name_p_true_in_errors() -> None:
    with pytest.raises(ValueError) as info:
        bayes_metrics([0, 1], [0.2, 1.5])
    assert str(info.value).startswith("p_true must be probabilities in [0, 1]")
    with pytest.raises(ValueError) as info:
        truth_metrics([0, 1], [0.2, 0.7], [0.2, -0.5])
    assert str(info.value).startswith("p_true must be probabilities in [0, 1]")


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_predictions_give_nan_truth_metrics(bad: float) -> None:
    y, _, p_true = _distorted(200, seed=12)
    p = np.full(y.size, 0.5)
    p[3] = bad
    m = truth_metrics(y, p, p_true)
    assert tuple(m) == TRUTH_METRIC_KEYS
    assert all(math.isnan(m[k]) for k in ("ece_true", "mae_true", "excess_log_loss"))
    assert math.isfinite(m["log_loss_bayes"]) and math.isfinite(m["auroc_bayes"])
