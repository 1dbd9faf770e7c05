"""Reliability bins and temperature scaling: the cases mutation testing showed unguarded
(docs/testing.md). Whole error messages, exact dtypes, quantile edges, the temperature bounds and
Newton's convergence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dropout_risk.analysis import calibration
from dropout_risk.analysis.calibration import (
    apply_temperature,
    bin_statistics,
    check_binary_inputs,
    fit_temperature,
    probs_to_logits,
    reliability_bins,
    sigmoid,
)


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 2, 2], [0.1, 0.2, 0.3], "y must contain only 0 and 1, found 2 (2 bad values); encode the positive class as 1"),
        (["a", "b"], [0.1, 0.2], "y must be numeric 0/1 labels, got dtype <U1"),
        ([[0, 1], [1, 0]], [0.1, 0.2], "y must be 1-D (one value per example), got shape (2, 2)"),
        ([0, 1], [[0.1, 0.2], [0.3, 0.4]], "p must be 1-D (one value per example), got shape (2, 2)"),
        ([0, 1], ["a", "b"], "p must be numeric probabilities, got dtype <U1"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "p has 1 non-finite values (nan/inf): need probabilities"),
        ([0, 1], [0.1, 1.5], "p must be probabilities in [0, 1], got values in [0.1, 1.5]; pass sigmoid(logits), not logits"),
    ],
)
def test_check_binary_inputs_says_exactly_what_is_wrong(y, p, message) -> None:
    with pytest.raises(ValueError) as info:
        check_binary_inputs(y, p)
    assert str(info.value) == message


def test_p_name_names_p_in_the_message() -> None:
    with pytest.raises(ValueError) as info:
        check_binary_inputs([0, 1], [0.1, 1.5], p_name="p_true")
    assert str(info.value).startswith("p_true must be probabilities in [0, 1]")


def test_checked_arrays_are_int64_labels_and_float64_probabilities() -> None:
    y, p = check_binary_inputs(np.array([0.0, 1.0, 1.0]), np.array([0, 1, 1], dtype=np.int32))
    assert y.dtype == np.int64 and p.dtype == np.float64
    assert y.tolist() == [0, 1, 1] and p.tolist() == [0.0, 1.0, 1.0]


def test_bin_statistics_defaults_are_15_uniform_bins() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(size=400)
    t = (rng.uniform(size=400) < p).astype(float)
    default = bin_statistics(t, p)
    explicit = bin_statistics(t, p, n_bins=15, strategy="uniform")
    assert default.n_bins == 15
    np.testing.assert_array_equal(default.edges, explicit.edges)
    np.testing.assert_array_equal(default.counts, explicit.counts)
    assert default.counts.dtype == np.int64


def test_one_bin_is_allowed_and_is_the_global_gap() -> None:
    t = np.array([1.0, 0.0, 1.0, 1.0])
    p = np.array([0.9, 0.2, 0.4, 0.5])
    bins = bin_statistics(t, p, n_bins=1)
    assert bins.counts.tolist() == [4]
    assert bins.ece == pytest.approx(abs(t.mean() - p.mean())) and bins.mce == pytest.approx(bins.ece)


def test_bin_statistics_flattens_column_inputs() -> None:
    t = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    p = np.array([0.9, 0.2, 0.4, 0.5, 0.05])
    flat = bin_statistics(t, p, n_bins=4)
    column = bin_statistics(t[:, None], p[:, None], n_bins=4)
    np.testing.assert_array_equal(column.counts, flat.counts)
    np.testing.assert_array_equal(column.frac_pos, flat.frac_pos)


@pytest.mark.parametrize(
    ("t_dtype", "p_dtype"),
    [(np.int64, np.float32), (np.longdouble, np.float64), (np.float64, np.longdouble)],
)
def test_bin_statistics_takes_any_numeric_dtype_and_returns_float64(t_dtype, p_dtype) -> None:
    # dyadic predictions: exact in every float type, so the statistics must be identical
    t = np.array([1, 0, 1, 0, 1, 0])
    p = np.array([0.75, 0.125, 0.375, 0.25, 0.875, 0.3125])
    bins = bin_statistics(t.astype(t_dtype), p.astype(p_dtype), n_bins=3, strategy="quantile")
    assert bins.edges.tolist() == [0.0, 0.3125, 0.75, 1.0]
    assert bins.counts.tolist() == [2, 2, 2]
    assert bins.mean_pred.tolist() == [0.1875, 0.34375, 0.8125]
    assert bins.frac_pos.tolist() == [0.0, 0.5, 1.0]
    assert {a.dtype for a in (bins.edges, bins.mean_pred, bins.frac_pos)} == {np.dtype(np.float64)}


def test_a_tie_group_goes_whole_to_the_bin_of_its_median_rank() -> None:
    # 10 predictions, 2 equal-mass bins (ranks 0-4, 5-9); the tie at 0.5 holds ranks 3-7, median
    # rank 5: the whole group goes to the upper bin.
    p = np.array([0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.8, 0.9])
    y = np.array([0, 0, 1, 0, 1, 0, 1, 1, 1, 1])
    bins = reliability_bins(y, p, n_bins=2, strategy="quantile")
    assert bins.counts.tolist() == [3, 7]
    np.testing.assert_array_equal(bins.edges, [0.0, 0.5, 1.0])


def test_quantile_edges_are_each_bins_smallest_prediction_then_one() -> None:
    p = np.array([0.7, 0.1, 0.4, 0.2, 0.9, 0.3])
    bins = reliability_bins([1, 0, 1, 0, 1, 0], p, n_bins=3, strategy="quantile")
    assert bins.edges.tolist() == [0.0, 0.3, 0.7, 1.0]
    # fewer predictions than bins: the empty trailing bins start at 1.0
    few = reliability_bins([0, 1, 1], [0.6, 0.2, 0.4], n_bins=5, strategy="quantile")
    assert few.edges.dtype == np.float64
    assert few.edges.tolist() == [0.0, 0.4, 0.6, 1.0, 1.0, 1.0]
    assert few.counts.tolist() == [1, 1, 1, 0, 0]


def test_sigmoid_is_float64_and_accurate_in_the_tails_for_float32_logits() -> None:
    x = np.array([-100.0, -30.0, 0.0, 30.0], dtype=np.float32)
    s = sigmoid(x)
    assert s.dtype == np.float64
    assert s[0] == pytest.approx(math.exp(-100.0), rel=1e-12)
    assert s[1] == pytest.approx(1 / (1 + math.exp(30.0)), rel=1e-12)
    assert s[2] == 0.5


def test_probs_to_logits_clips_both_ends_in_float64() -> None:
    eps = 1e-7
    z = probs_to_logits(np.array([0.0, 1.0, 0.5], dtype=np.float32))
    top = math.log((1 - eps) / eps)
    assert z.dtype == np.float64
    np.testing.assert_allclose(z, [-top, top, 0.0], rtol=1e-9, atol=0)


def test_apply_temperature_divides_in_float64() -> None:
    z = np.array([0.1, 2.7, -5.3], dtype=np.float32)
    np.testing.assert_array_equal(apply_temperature(z, 3.0), sigmoid(z.astype(np.float64) / 3.0))


def _symmetric(c: float, n_pos: int, n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    """Logit +c on n_pos + n_neg rows of which n_pos are 1, and -c mirrored: the BCE optimum has
    sigmoid(c / T) = n_pos / (n_pos + n_neg), so T = c / logit(q)."""
    z = np.r_[np.full(n_pos + n_neg, c), np.full(n_pos + n_neg, -c)]
    y = np.r_[np.ones(n_pos), np.zeros(n_neg), np.zeros(n_pos), np.ones(n_neg)].astype(int)
    return z, y


def test_a_large_temperature_inside_the_bound_is_found() -> None:
    z, y = _symmetric(1000.0, 4, 1)  # q = 0.8: T = 1000 / ln 4 = 721, inside [1e-3, 1e3]
    assert fit_temperature(z, y) == pytest.approx(1000.0 / math.log(4.0), rel=1e-9)


def test_temperatures_beyond_the_bounds_are_exactly_the_bounds() -> None:
    z, y = _symmetric(1e-3, 4, 1)  # optimum T = 1e-3 / ln 4 < 1e-3
    assert fit_temperature(z, y) == 1e-3
    # weakly anti-correlated logits: the gradient at the upper bound is positive but below 1
    assert fit_temperature([0.5, -0.5], [0, 1]) == 1e3


def test_perfectly_calibrated_logits_keep_a_temperature_of_exactly_one() -> None:
    z, y = _symmetric(math.log(4.0), 4, 1)  # sigmoid(ln 4) = 0.8 = 4 / (4 + 1): already calibrated
    assert fit_temperature(z, y) == 1.0


def test_all_zero_logits_give_the_upper_bound() -> None:
    # no information: the loss is flat in T (gradient exactly 0), so T is the largest allowed
    assert fit_temperature(np.zeros(4), [0, 1, 0, 1]) == 1e3


@pytest.mark.parametrize(("scale", "true_T"), [(0.3, 0.5), (3.0, 2.5), (30.0, 4.0)])
def test_the_fit_takes_at_most_ten_gradient_evaluations(monkeypatch, scale: float, true_T: float) -> None:
    """Two at the bracket ends, then a few Newton steps; small logits (curvature below 1) too."""
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, scale, 2000)
    y = (rng.uniform(size=z.size) < sigmoid(z / true_T)).astype(int)
    evaluations = []
    original = calibration._mean_bce_grad_hess
    monkeypatch.setattr(calibration, "_mean_bce_grad_hess", lambda t, z, y: evaluations.append(t) or original(t, z, y))
    T = fit_temperature(z, y)
    assert 2 < len(evaluations) <= 10
    assert T == pytest.approx(true_T, rel=0.1)


def test_newton_converges_in_a_few_iterations() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 3.0, 2000)
    y = (rng.uniform(size=z.size) < sigmoid(z / 2.5)).astype(int)
    assert fit_temperature(z, y, max_iter=8) == pytest.approx(fit_temperature(z, y), rel=1e-12)


@pytest.mark.parametrize(
    ("logits", "y", "message"),
    [
        ([[0.1, 0.2], [0.3, 0.4]], [0, 1], "logits must be 1-D (one value per example), got shape (2, 2)"),
        ([0.1, np.inf, np.nan], [0, 1, 0], "logits has 2 non-finite values: cannot fit a temperature"),
        ([0.1, 0.2], [1, 1], "temperature scaling needs both classes in the validation split"),
    ],
)
def test_fit_temperature_says_exactly_what_is_wrong(logits, y, message) -> None:
    with pytest.raises(ValueError) as info:
        fit_temperature(logits, y)
    assert str(info.value) == message
