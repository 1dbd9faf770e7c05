"""Bootstrap intervals: the weighted metrics against binary_metrics on repeated rows, stratification,
seeding, coverage against a known population value, paired differences, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dropout_risk.analysis.bootstrap import (
    HEADLINE,
    intervals,
    metric_samples,
    paired_difference,
    resample_counts,
)
from dropout_risk.analysis.calibration import sigmoid
from dropout_risk.analysis.metrics import binary_metrics

A, B = 2.0, 3.0  # p_true ~ Beta(2, 3): prevalence 0.4


def _tied(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from p, and p rounded to 2 decimals (many ties), with values on bin edges, 0.5, 0 and 1."""
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(A, B, size=n), 2)
    p[:8] = [0.0, 1.0, 0.5, 0.5, 1 / 15, 2 / 15, 14 / 15, 0.2]
    y = (rng.uniform(size=n) < p).astype(np.int64)
    y[:4] = [0, 1, 0, 1]
    return y, p


# the predictor p = p_true, p_true ~ Beta(2, 3), over the population (scipy quad / dblquad agree to 1e-10):
# log loss = E[H(p)] = 7/12, Brier = E[p (1 - p)] = 1/5, AUROC = E[p_i (1 - p_j) 1(p_i > p_j)] / (mu (1 - mu)) = 31/42
TRUTH = {"log_loss": 7 / 12, "brier": 1 / 5, "auroc": 31 / 42}


def test_population_values_against_a_million_draws() -> None:
    p = np.sort(np.random.default_rng(12345).beta(A, B, size=10**6))
    mu = A / (A + B)
    below = np.cumsum(1.0 - p) - (1.0 - p)  # sum of (1 - p_j) over the draws below p_i
    assert float(np.mean(-(p * np.log(p) + (1.0 - p) * np.log1p(-p)))) == pytest.approx(TRUTH["log_loss"], abs=1e-3)
    assert float(np.mean(p * (1.0 - p))) == pytest.approx(TRUTH["brier"], abs=1e-3)
    assert float(np.sum(p * below) / (p.size**2 * mu * (1.0 - mu))) == pytest.approx(TRUTH["auroc"], abs=1e-3)


def _coverage(n_sets: int, n: int, n_resamples: int) -> dict[str, float]:
    """Fraction of n_sets simulated splits whose 95% interval holds the population value.

    Each split has exactly n * 0.4 positives, drawn from p | y=1 ~ Beta(A + 1, B), and negatives from
    p | y=0 ~ Beta(A, B + 1): the class counts are fixed, as the stratified bootstrap assumes (with
    Bernoulli class counts log loss and Brier cover ~0.92 instead: the intervals condition on them).
    """
    truth, rng = TRUTH, np.random.default_rng(2024)
    n1 = round(n * A / (A + B))
    y = np.r_[np.ones(n1, np.int64), np.zeros(n - n1, np.int64)]
    hits = dict.fromkeys(truth, 0)
    for k in range(n_sets):
        p = np.r_[rng.beta(A + 1, B, size=n1), rng.beta(A, B + 1, size=n - n1)]
        got = intervals(y, p, n_resamples=n_resamples, seed=k, metrics=tuple(truth))
        for name, (lo, hi) in got.items():
            hits[name] += lo <= truth[name] <= hi
    return {name: h / n_sets for name, h in hits.items()}


def test_all_ones_counts_reproduce_binary_metrics() -> None:
    y, p = _tied(3000, seed=0)
    ref = binary_metrics(y, p)
    got = metric_samples(y, p, np.ones((1, y.size)))
    assert tuple(got) == HEADLINE
    for name in HEADLINE:
        assert got[name].shape == (1,)
        assert got[name][0] == pytest.approx(ref[name], abs=1e-12), name


@pytest.mark.parametrize("tied", [True, False])
def test_each_resample_equals_binary_metrics_on_the_repeated_rows(tied: bool) -> None:
    y, p = _tied(800, seed=1)
    if not tied:
        p = np.clip(p + np.random.default_rng(2).uniform(-0.004, 0.004, size=p.size), 0.0, 1.0)
    counts = resample_counts(y, n_resamples=6, seed=3)
    got = metric_samples(y, p, counts)
    for b in range(counts.shape[0]):
        rows = np.repeat(np.arange(y.size), counts[b].astype(int))
        ref = binary_metrics(y[rows], p[rows])
        for name in HEADLINE:
            assert got[name][b] == pytest.approx(ref[name], abs=1e-12), (name, b)


def test_any_counts_matrix_and_a_metric_subset() -> None:
    y, p = _tied(300, seed=4)
    counts = np.random.default_rng(5).integers(0, 4, size=(3, y.size)).astype(float)  # not stratified
    got = metric_samples(y, p, counts, metrics=("auprc", "ece"))
    assert tuple(got) == ("auprc", "ece")
    for b in range(3):
        rows = np.repeat(np.arange(y.size), counts[b].astype(int))
        ref = binary_metrics(y[rows], p[rows])
        assert got["auprc"][b] == pytest.approx(ref["auprc"], abs=1e-12)
        assert got["ece"][b] == pytest.approx(ref["ece"], abs=1e-12)


def test_resamples_are_stratified() -> None:
    y, _ = _tied(500, seed=6)
    n1, n0 = int(y.sum()), int((1 - y).sum())
    counts = resample_counts(y, n_resamples=300, seed=7)
    assert counts.shape == (300, 500) and counts.dtype == np.float64
    assert np.all(counts >= 0) and np.all(counts == np.round(counts))
    assert np.all(counts[:, y == 1].sum(axis=1) == n1)
    assert np.all(counts[:, y == 0].sum(axis=1) == n0)
    assert counts.max() > 1 and np.mean(counts == 0) == pytest.approx(math.exp(-1), abs=0.01)  # with replacement
    assert np.allclose(counts.mean(axis=0), 1.0, atol=0.35)  # every row equally likely


def test_seeded() -> None:
    y, p = _tied(400, seed=8)
    assert intervals(y, p, n_resamples=200, seed=1) == intervals(y, p, n_resamples=200, seed=1)
    assert intervals(y, p, n_resamples=200, seed=1) != intervals(y, p, n_resamples=200, seed=2)
    assert np.array_equal(resample_counts(y, 50, seed=3), resample_counts(y, 50, seed=3))


def test_intervals_are_percentiles_of_the_resampled_metrics() -> None:
    y, p = _tied(400, seed=16)
    samples = metric_samples(y, p, resample_counts(y, n_resamples=250, seed=4))
    got = intervals(y, p, n_resamples=250, level=0.9, seed=4)
    for name in HEADLINE:
        assert got[name] == pytest.approx(tuple(np.quantile(samples[name], [0.05, 0.95])), abs=1e-15), name


def test_intervals_hold_the_estimate_and_narrow_with_n() -> None:
    rng = np.random.default_rng(9)
    widths = []
    for n in (500, 5000):
        p = rng.beta(A, B, size=n)
        y = (rng.uniform(size=n) < p).astype(np.int64)
        got, ref = intervals(y, p, n_resamples=300), binary_metrics(y, p)
        assert set(got) == set(HEADLINE)
        for name, (lo, hi) in got.items():
            assert lo < ref[name] < hi, name
        widths.append(got["auroc"][1] - got["auroc"][0])
    assert widths[1] < 0.5 * widths[0]  # width ~ 1 / sqrt(n): ratio ~0.32
    narrow = intervals(y, p, n_resamples=300, level=0.5, metrics=("auroc",))["auroc"]
    assert narrow[1] - narrow[0] < 0.5 * widths[1]


def test_coverage_of_known_population_values() -> None:
    # 200 splits of 500 rows, 400 resamples each (fewer than the default 1,000, to keep this ~2 s);
    # binomial sd of a 95% coverage over 200 splits: 0.015
    cov = _coverage(n_sets=200, n=500, n_resamples=400)
    for name, c in cov.items():
        assert 0.88 <= c <= 0.99, (name, c)


@pytest.mark.slow
def test_coverage_of_known_population_values_1000_splits() -> None:
    cov = _coverage(n_sets=1000, n=500, n_resamples=1000)  # binomial sd 0.007
    for name, c in cov.items():
        assert 0.925 <= c <= 0.975, (name, c)


def test_paired_difference_of_identical_models_is_zero() -> None:
    y, p = _tied(600, seed=10)
    got = paired_difference(y, p, p.copy(), n_resamples=200)
    assert got == {"auroc": (0.0, 0.0, 0.0), "log_loss": (0.0, 0.0, 0.0)}


def test_paired_difference_finds_the_worse_model() -> None:
    rng = np.random.default_rng(11)
    p = rng.beta(A, B, size=2000)
    y = (rng.uniform(size=p.size) < p).astype(np.int64)
    noisy = sigmoid(np.log(p / (1 - p)) + rng.normal(0.0, 1.0, size=p.size))
    got = paired_difference(y, p, noisy, n_resamples=500, metrics=("auroc", "log_loss", "brier"))
    ref_a, ref_b = binary_metrics(y, p), binary_metrics(y, noisy)
    for name, (est, lo, hi) in got.items():
        assert est == ref_a[name] - ref_b[name], name
        assert lo < est < hi, name
    assert got["auroc"][1] > 0  # p ranks better ...
    assert got["log_loss"][2] < 0 and got["brier"][2] < 0  # ... and scores lower
    swapped = paired_difference(y, noisy, p, n_resamples=500, metrics=("auroc",))["auroc"]
    assert swapped[2] < 0


def test_paired_difference_uses_the_same_resamples_for_both_models() -> None:
    y, p = _tied(700, seed=12)
    q = np.clip(p + np.random.default_rng(13).normal(0.0, 0.1, size=p.size), 0.0, 1.0)
    counts = resample_counts(y, n_resamples=300, seed=5)
    diff = metric_samples(y, p, counts, ("auroc",))["auroc"] - metric_samples(y, q, counts, ("auroc",))["auroc"]
    _, lo, hi = paired_difference(y, p, q, n_resamples=300, seed=5, metrics=("auroc",))["auroc"]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(diff, [0.025, 0.975])), abs=1e-15)


def test_nonfinite_predictions_give_nan_intervals() -> None:
    y, p = _tied(100, seed=14)
    bad = p.copy()
    bad[3] = np.nan
    got = intervals(y, bad)
    assert set(got) == set(HEADLINE) and all(math.isnan(v) for lh in got.values() for v in lh)
    paired = paired_difference(y, p, np.where(np.arange(y.size) == 0, np.inf, p))
    assert all(math.isnan(v) for t in paired.values() for v in t)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda y, p: intervals(np.zeros(50, int), p), "needs both classes in the split: y has no 1s"),
        (lambda y, p: intervals(np.ones(50, int), p), "needs both classes in the split: y has no 0s"),
        (lambda y, p: resample_counts(np.ones(50, int)), "needs both classes"),
        (lambda y, p: paired_difference(np.zeros(50, int), p, p), "needs both classes"),
        (lambda y, p: intervals(np.zeros(50, int), np.full(50, np.nan)), "needs both classes"),
        (lambda y, p: intervals(y, p, level=0.0), r"level must be in \(0, 1\)"),
        (lambda y, p: intervals(y, p, level=1.0), r"level must be in \(0, 1\)"),
        (lambda y, p: intervals(y, p, level=95), r"level must be in \(0, 1\)"),
        (lambda y, p: intervals(y, p, level=float("nan")), r"level must be in \(0, 1\)"),
        (lambda y, p: paired_difference(y, p, p, level=1.5), r"level must be in \(0, 1\)"),
        (lambda y, p: intervals(y, p, n_resamples=0), "n_resamples must be an integer >= 1, got 0"),
        (lambda y, p: intervals(y, p, n_resamples=2.5), "n_resamples must be an integer >= 1"),
        (lambda y, p: resample_counts(y, n_resamples=-1), "n_resamples must be an integer >= 1"),
        (lambda y, p: paired_difference(y, p, p, n_resamples=0), "n_resamples must be an integer >= 1"),
        (lambda y, p: intervals(y, p, metrics=("auroc", "mce")), "metrics must be a non-empty subset"),
        (lambda y, p: intervals(y, p * 2), r"p must be probabilities in \[0, 1\]"),
        (lambda y, p: paired_difference(y, p, p[:-1]), "y has 50 values but p_b has 49"),
        (lambda y, p: metric_samples(y, p, np.ones((2, 49))), r"counts must have shape \(n_resamples, 50\)"),
        (lambda y, p: metric_samples(y, p, -np.ones((2, 50))), "counts must be non-negative"),
        (lambda y, p: metric_samples(y, p, np.where(y == 1, 1.0, 0.0)[None, :]), "rows of both classes"),
    ],
)
def test_bad_input_raises_one_line(call, match: str) -> None:
    y, p = _tied(50, seed=15)
    with pytest.raises(ValueError, match=match) as err:
        call(y, p)
    assert "\n" not in str(err.value)
