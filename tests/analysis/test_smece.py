"""Smooth ECE: it is relplot's own smECE, near 0 for calibrated and clearly > 0 for miscalibrated
predictions, nan for a diverged model, one-line ValueError on bad input; relplot's smoothed curve."""

from __future__ import annotations

import math

import numpy as np
import pytest
import relplot

from dropout_risk.analysis.smece import smece, smooth_curve


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    return (rng.uniform(size=n) < p).astype(np.int64), p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_relplots_own_function(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    p = rng.beta(2.0, 5.0, size=n)
    y = (rng.uniform(size=n) < p**0.7).astype(np.int64)
    assert smece(y, p) == float(relplot.smECE(p, y))


def test_accepts_lists_and_a_column() -> None:
    y, p = _calibrated(500, 3)
    expected = float(relplot.smECE(p, y))
    assert smece(y.tolist(), p.tolist()) == expected
    assert smece(y, p.reshape(-1, 1)) == expected


def test_calibrated_large_sample_is_near_zero() -> None:
    y, p = _calibrated(50_000, 4)
    assert 0.0 <= smece(y, p) < 0.015


def test_miscalibrated_is_clearly_positive() -> None:
    y, p_true = _calibrated(20_000, 5)
    value = smece(y, 0.5 * p_true + 0.5)  # overconfident in y = 1 by 0.5 * (1 - p_true): 0.25 on average
    assert value > 0.05
    assert value > 10 * smece(y, p_true)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_p_gives_nan(bad: float) -> None:
    y, p = _calibrated(100, 6)
    p[7] = bad
    assert math.isnan(smece(y, p))


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 1, 1], [0.2, 0.5], "same length"),
        ([], [], "empty"),
        ([0, 1], [0.2, 1.5], r"in \[0, 1\]"),
        ([0, 2], [0.2, 0.5], "only 0 and 1"),
        ([0, 1], ["a", "b"], "numeric"),
        (np.zeros((2, 2)), [0.2, 0.5], "1-D"),
    ],
)
def test_bad_input_raises_one_line_value_error(y, p, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        smece(y, p)
    assert "\n" not in str(info.value)


def test_smooth_curve_is_relplots_curve_with_band() -> None:
    y, p = _calibrated(2_000, 7)
    mesh, curve, low, high = smooth_curve(y, p, num_bootstrap=20, seed=1)
    assert mesh.shape == curve.shape == low.shape == high.shape == (200,)
    assert mesh[0] == 0.0 and mesh[-1] == 1.0
    assert np.all(low <= high)
    assert np.mean((low <= curve) & (curve <= high)) > 0.9
    assert np.max(np.abs(curve - mesh)[20:-20]) < 0.15  # calibrated: close to the diagonal inside


def test_smooth_curve_seed_is_reproducible_and_leaves_global_state_alone() -> None:
    y, p = _calibrated(1_000, 8)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    one = smooth_curve(y, p, num_bootstrap=10, seed=5)
    assert np.array_equal(np.random.get_state()[1], before)
    two = smooth_curve(y, p, num_bootstrap=10, seed=5)
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(a, b)


def test_smooth_curve_rejects_nonfinite_p() -> None:
    y, p = _calibrated(100, 9)
    p[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        smooth_curve(y, p)
