"""Reliability bins (the one binning used by every calibration metric and plot) and temperature scaling.

Conventions: positive-class reliability, 15 equal-width bins
on [0, 1] by default, plus an equal-mass ("quantile") variant. Temperature scaling is fitted on the
validation split only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

Strategy = Literal["uniform", "quantile"]


def _as_1d(a: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per example), got shape {arr.shape}")
    return arr


def _check_labels(y: ArrayLike, name: str = "y") -> np.ndarray:
    y_arr = _as_1d(y, name)
    if y_arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one example")
    if y_arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric 0/1 labels, got dtype {y_arr.dtype}")
    bad = ~np.isin(y_arr, (0, 1))
    if bad.any():
        example = y_arr[bad][0].item()
        raise ValueError(
            f"{name} must contain only 0 and 1, found {example!r} ({int(bad.sum())} bad values); "
            "encode the positive class as 1"
        )
    return y_arr.astype(np.int64)


def _check_probs(p: ArrayLike, n: int, name: str = "p", allow_nonfinite: bool = False) -> np.ndarray:
    p_arr = _as_1d(p, name)
    if p_arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric probabilities, got dtype {p_arr.dtype}")
    p_arr = p_arr.astype(np.float64)
    if p_arr.size != n:
        raise ValueError(f"y has {n} values but {name} has {p_arr.size}: they must have the same length")
    finite = np.isfinite(p_arr)
    if not allow_nonfinite and not finite.all():
        raise ValueError(f"{name} has {int((~finite).sum())} non-finite values (nan/inf): need probabilities")
    out = finite & ((p_arr < 0.0) | (p_arr > 1.0))
    if out.any():
        lo, hi = float(p_arr[finite].min()), float(p_arr[finite].max())
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
            "pass sigmoid(logits), not logits"
        )
    return p_arr


def check_binary_inputs(
    y: ArrayLike, p: ArrayLike, allow_nonfinite: bool = False, p_name: str = "p"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and positive-class probabilities; return them as (int64, float64) 1-D arrays.

    Raises ValueError (one line saying what is wrong) unless: both are 1-D (an (n, 1) column is
    accepted) and of the same non-zero length, y is 0/1, p lies in [0, 1] and is finite
    (non-finite p is let through when ``allow_nonfinite`` is true; its finite values are still checked).
    ``p_name`` names p in the error messages.
    """
    y_arr = _check_labels(y)
    p_arr = _check_probs(p, y_arr.size, name=p_name, allow_nonfinite=allow_nonfinite)
    return y_arr, p_arr


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram.

    edges:     n_bins + 1 non-decreasing bin edges (for "quantile": 0, the smallest prediction of each bin, 1).
    mean_pred: mean predicted probability per bin (nan for empty bins).
    frac_pos:  mean target per bin: the observed frequency of y = 1 (nan for empty bins). When built by
               ``bin_statistics`` with a known true probability as target, the mean true probability.
    counts:    number of examples per bin (int64, sums to n).
    """

    edges: np.ndarray
    mean_pred: np.ndarray
    frac_pos: np.ndarray
    counts: np.ndarray

    @property
    def n_bins(self) -> int:
        return int(self.counts.size)

    @property
    def gaps(self) -> np.ndarray:
        """|frac_pos - mean_pred| per bin (nan for empty bins)."""
        return np.abs(self.frac_pos - self.mean_pred)

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted mean gap over non-empty bins."""
        nonempty = self.counts > 0
        weights = self.counts[nonempty] / self.counts.sum()
        return float(np.sum(weights * self.gaps[nonempty]))

    @property
    def mce(self) -> float:
        """Maximum calibration error: the largest gap over non-empty bins."""
        return float(np.max(self.gaps[self.counts > 0]))


def _bin_index(p: np.ndarray, n_bins: int, strategy: Strategy) -> tuple[np.ndarray, np.ndarray]:
    """Bin index of every prediction, and the bin edges. p must be finite and in [0, 1]."""
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        # bins are [e_i, e_{i+1}); the last one is closed so that p == 1.0 falls in it
        idx = np.searchsorted(edges[1:-1], p, side="right")
        return idx, edges
    if strategy == "quantile":
        # equal mass: split the sorted order into n_bins nearly equal chunks (np.array_split sizes);
        # a group of tied predictions never straddles a boundary: it goes whole to the bin of its
        # median rank, so the row order of the data cannot change the result (saturated outputs
        # such as many exact 0.0 / 1.0 are common). Heavy ties or n < n_bins leave some bins empty.
        order = np.argsort(p, kind="stable")
        sorted_p = p[order]
        sizes = [len(c) for c in np.array_split(np.arange(p.size), n_bins)]
        rank_bin = np.repeat(np.arange(n_bins), sizes)
        _, first, inverse, group_size = np.unique(
            sorted_p, return_index=True, return_inverse=True, return_counts=True
        )
        sorted_bin = rank_bin[first + (group_size - 1) // 2][inverse]
        idx = np.empty(p.size, dtype=np.int64)
        idx[order] = sorted_bin
        # edge k = smallest prediction in bins >= k (1.0 if none), so edges are non-decreasing
        start = np.searchsorted(sorted_bin, np.arange(1, n_bins), side="left")
        interior = np.where(start < p.size, sorted_p[np.minimum(start, p.size - 1)], 1.0)
        edges = np.concatenate([[0.0], interior, [1.0]])
        return idx, edges
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def bin_statistics(
    target: ArrayLike, p: ArrayLike, n_bins: int = 15, strategy: Strategy = "uniform"
) -> ReliabilityBins:
    """Bin ``p`` and average ``target`` and ``p`` per bin; the binning behind every ECE-like metric.

    ``target`` is any real-valued array of the same length (labels, or a known true probability).
    ``p`` must already be valid (finite, in [0, 1]); use ``reliability_bins`` for checked input.
    """
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    t = np.asarray(target, dtype=np.float64).reshape(-1)
    p_arr = np.asarray(p, dtype=np.float64).reshape(-1)
    idx, edges = _bin_index(p_arr, int(n_bins), strategy)
    counts = np.bincount(idx, minlength=n_bins).astype(np.int64)
    sum_p = np.bincount(idx, weights=p_arr, minlength=n_bins)
    sum_t = np.bincount(idx, weights=t, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.where(counts > 0, sum_p / counts, np.nan)
        frac_pos = np.where(counts > 0, sum_t / counts, np.nan)
    return ReliabilityBins(edges=edges, mean_pred=mean_pred, frac_pos=frac_pos, counts=counts)


def reliability_bins(
    y: ArrayLike, p: ArrayLike, n_bins: int = 15, strategy: Strategy = "uniform"
) -> ReliabilityBins:
    """Positive-class reliability bins of predictions ``p`` against 0/1 labels ``y``.

    strategy "uniform": ``n_bins`` equal-width bins on [0, 1] (p == 1.0 goes in the last bin);
    "quantile": equal-mass bins, the sorted predictions split into ``n_bins`` nearly equal chunks
    (tied predictions are kept in one bin, see ``_bin_index``).
    Raises ValueError on invalid input (see ``check_binary_inputs``).
    """
    y_arr, p_arr = check_binary_inputs(y, p)
    return bin_statistics(y_arr, p_arr, n_bins=n_bins, strategy=strategy)


def sigmoid(x: ArrayLike) -> np.ndarray:
    """Logistic function, accurate in both tails (relative error) and free of overflow warnings."""
    x_arr = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x_arr))  # in (0, 1]: never overflows
    return np.where(x_arr >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


def probs_to_logits(p: ArrayLike, eps: float = 1e-7) -> np.ndarray:
    """Logits of probabilities clipped to [eps, 1 - eps], for models that only expose probabilities."""
    p_arr = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p_arr) - np.log1p(-p_arr)


_T_MIN, _T_MAX = 1e-3, 1e3


def _mean_bce_grad_hess(t: float, z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """First and second derivative in t of mean BCE(sigmoid(t * z), y)."""
    s = sigmoid(t * z)
    return float(np.mean(z * (s - y))), float(np.mean(z * z * s * (1.0 - s)))


def fit_temperature(logits: ArrayLike, y: ArrayLike, max_iter: int = 100) -> float:
    """Fit one temperature T > 0 minimising the mean BCE of sigmoid(logits / T) against ``y``.

    Fit it on the validation split only. The loss is convex in the inverse temperature t = 1 / T
    (a one-parameter logistic regression without intercept), so the minimiser is found exactly and
    deterministically by safeguarded Newton steps on t inside a bisection bracket, float64, no RNG.
    T is bounded to [1e-3, 1e3]: perfectly separated logits give 1e-3, logits no better than (or
    anti-correlated with) the labels give 1e3 (probabilities collapse towards 0.5).
    Raises ValueError on non-finite logits, invalid labels or a single-class ``y``.
    """
    y_arr = _check_labels(y)
    z = _as_1d(logits, "logits").astype(np.float64)
    if z.size != y_arr.size:
        raise ValueError(f"y has {y_arr.size} values but logits has {z.size}: they must have the same length")
    if not np.all(np.isfinite(z)):
        raise ValueError(
            f"logits has {int((~np.isfinite(z)).sum())} non-finite values: cannot fit a temperature"
        )
    if y_arr.min() == y_arr.max():
        raise ValueError("temperature scaling needs both classes in the validation split")
    yf = y_arr.astype(np.float64)

    lo, hi = 1.0 / _T_MAX, 1.0 / _T_MIN  # bracket on t = 1 / T; the derivative increases with t
    if _mean_bce_grad_hess(lo, z, yf)[0] >= 0.0:
        return _T_MAX
    if _mean_bce_grad_hess(hi, z, yf)[0] <= 0.0:
        return _T_MIN
    t = 1.0
    for _ in range(max_iter):
        g, h = _mean_bce_grad_hess(t, z, yf)
        if g > 0.0:
            hi = t
        else:
            lo = t
        if abs(g) <= 1e-12 * max(1.0, float(np.mean(np.abs(z)))) or hi - lo <= 1e-12 * t:
            break
        step = t - g / h if h > 0.0 else np.nan
        t = step if lo < step < hi else 0.5 * (lo + hi)
    return float(1.0 / t)


def apply_temperature(logits: ArrayLike, T: float) -> np.ndarray:
    """Calibrated probabilities sigmoid(logits / T) as a float64 numpy array of the logits' shape."""
    if not np.isfinite(T) or T <= 0.0:
        raise ValueError(f"temperature must be a finite positive number, got {T!r}")
    return sigmoid(np.asarray(logits, dtype=np.float64) / float(T))
