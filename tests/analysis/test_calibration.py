"""Reliability bins and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from dropout_risk.analysis.calibration import (
    apply_temperature,
    fit_temperature,
    probs_to_logits,
    reliability_bins,
    sigmoid,
)


def _calibrated_logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a perfectly calibrated model: y ~ Bernoulli(sigmoid(z))."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, size=n)
    return z, (rng.uniform(size=n) < sigmoid(z)).astype(np.int64)


def test_uniform_bins_counts_means_and_edges() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=1_003)
    y = (rng.uniform(size=p.size) < p).astype(int)
    bins = reliability_bins(y, p, n_bins=15)
    assert bins.counts.sum() == p.size
    np.testing.assert_allclose(bins.edges, np.linspace(0, 1, 16))
    k = 7
    inside = (p >= bins.edges[k]) & (p < bins.edges[k + 1])
    assert bins.counts[k] == inside.sum()
    assert bins.mean_pred[k] == pytest.approx(p[inside].mean())
    assert bins.frac_pos[k] == pytest.approx(y[inside].mean())


def test_a_prediction_on_a_bin_edge_opens_the_next_bin() -> None:
    """Uniform bins are [k/15, (k+1)/15), the last one closed: p == k/15 exactly (0.2 is 3/15)
    belongs to bin k, the largest float below it to bin k - 1, and p == 1.0 to bin 14."""
    edges = np.arange(16) / 15
    np.testing.assert_array_equal(reliability_bins([0, 1], [0.2, 0.7]).edges, np.linspace(0, 1, 16))
    np.testing.assert_array_equal(edges, np.linspace(0, 1, 16))  # the same floats as the bins' edges
    assert edges[3] == 0.2
    cases = [(k / 15, min(k, 14)) for k in range(16)]
    cases += [(np.nextafter(k / 15, 0.0), k - 1) for k in range(1, 16)]
    cases += [(0.2, 3), (np.nextafter(0.2, 1.0), 3), (0.0, 0)]
    for p, expected in cases:
        counts = reliability_bins([1], [p]).counts
        assert counts.tolist() == [int(k == expected) for k in range(15)], (p, expected)
    # all sixteen edges at once: one per bin, and the last bin also holds 1.0
    bins = reliability_bins(np.zeros(16, dtype=int), edges)
    assert bins.counts.tolist() == [1] * 14 + [2]
    np.testing.assert_array_equal(bins.mean_pred[:14], edges[:14])
    assert bins.mean_pred[14] == pytest.approx((14 / 15 + 1.0) / 2)


def test_empty_bins_have_zero_count_and_nan_means() -> None:
    bins = reliability_bins([0, 1, 1], [0.0, 1.0, 1.0], n_bins=15)
    assert bins.counts.tolist() == [1] + [0] * 13 + [2]
    assert np.isnan(bins.mean_pred[1:14]).all() and np.isnan(bins.frac_pos[1:14]).all()
    assert bins.ece == 0.0


def test_quantile_bins_have_nearly_equal_counts() -> None:
    rng = np.random.default_rng(1)
    p = rng.beta(0.5, 3.0, size=10_007)  # skewed: equal-width bins would be very unequal
    y = (rng.uniform(size=p.size) < p).astype(int)
    bins = reliability_bins(y, p, n_bins=15, strategy="quantile")
    assert bins.counts.sum() == p.size
    assert bins.counts.max() - bins.counts.min() <= 1
    assert np.all(np.diff(bins.edges) >= 0) and bins.edges[0] == 0.0 and bins.edges[-1] == 1.0
    assert np.all(np.diff(bins.mean_pred) > 0)


def test_quantile_bins_keep_ties_together_whatever_the_row_order() -> None:
    # half of the predictions saturated at exactly 1.0, labels sorted: chunking the sorted order
    # naively would split the tie by row order and invent calibration error
    rng = np.random.default_rng(2)
    p = np.concatenate([np.full(500, 1.0), rng.uniform(size=500)])
    y = np.concatenate([np.zeros(250), np.ones(250), rng.uniform(size=500) < p[500:]]).astype(int)
    base = reliability_bins(y, p, strategy="quantile")
    perm = rng.permutation(p.size)
    shuffled = reliability_bins(y[perm], p[perm], strategy="quantile")
    np.testing.assert_array_equal(base.counts, shuffled.counts)
    assert base.ece == pytest.approx(shuffled.ece)
    assert base.counts.sum() == p.size and 500 in base.counts.tolist()


def test_unknown_strategy_and_bad_n_bins_raise() -> None:
    with pytest.raises(ValueError, match="strategy"):
        reliability_bins([0, 1], [0.2, 0.7], strategy="kmeans")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins([0, 1], [0.2, 0.7], n_bins=0)


def test_temperature_recovers_overconfidence() -> None:
    z, y = _calibrated_logits(50_000, seed=3)
    over = 3.0 * z
    t = fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.10)
    before = log_loss(y, sigmoid(over))
    after = log_loss(y, apply_temperature(over, t))
    assert after < before - 0.05
    # it is the minimiser: nudging T either way does not lower the loss
    for nudged in (0.98 * t, 1.02 * t):
        assert log_loss(y, apply_temperature(over, nudged)) >= after


def test_temperature_of_a_calibrated_model_is_one() -> None:
    z, y = _calibrated_logits(50_000, seed=4)
    assert fit_temperature(z, y) == pytest.approx(1.0, abs=0.05)


def test_temperature_is_deterministic_and_accepts_probability_logits() -> None:
    z, y = _calibrated_logits(5_000, seed=5)
    assert fit_temperature(z, y) == fit_temperature(z.copy(), y.copy())
    p = sigmoid(0.5 * z)  # under-confident probabilities -> T about 0.5
    assert fit_temperature(probs_to_logits(p), y) == pytest.approx(0.5, rel=0.15)


def test_temperature_bounds_for_degenerate_logits() -> None:
    assert fit_temperature([2.0, -2.0], [1, 0]) == pytest.approx(1e-3)  # perfectly separated
    assert fit_temperature([2.0, -2.0], [0, 1]) == pytest.approx(1e3)  # anti-correlated


def test_temperature_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="both classes in the validation split"):
        fit_temperature([0.3, 1.2, -0.4], [1, 1, 1])
    with pytest.raises(ValueError, match="non-finite"):
        fit_temperature([0.3, np.nan], [0, 1])
    with pytest.raises(ValueError, match="same length"):
        fit_temperature([0.3, 0.1, 0.2], [0, 1])


def test_apply_temperature() -> None:
    z = np.array([-800.0, -1.0, 0.0, 2.0, 800.0])
    np.testing.assert_allclose(apply_temperature(z, 2.0), 1 / (1 + np.exp(-z / 2)))
    assert apply_temperature(z, 1.0).dtype == np.float64
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(z, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(z, float("nan"))
