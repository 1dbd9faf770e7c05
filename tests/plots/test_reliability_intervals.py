"""Reliability diagrams: per-bin 95% Wilson intervals (read back from the drawn error bars), curves
broken at empty bins, smECE and reference models in the legend, small counts over the histogram."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.stats import binomtest

from dropout_risk.analysis.calibration import reliability_bins
from dropout_risk.plots.png import close
from dropout_risk.plots.reliability import (
    DIVERGED_TEXT,
    draw_reliability,
    reliability_diagram,
    wilson_interval,
)

EMPTY_BIN = 7  # of 15 equal-width bins: [7/15, 8/15) = [0.467, 0.533)


def _data(n: int = 3_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    return (rng.uniform(size=n) < p).astype(np.int64), p


def _with_empty_middle_bin(n: int = 3_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated-ish data with no prediction in bin 7 (predictions there moved to bins 6 and 8)."""
    y, p = _data(n, seed)
    lo, hi = EMPTY_BIN / 15, (EMPTY_BIN + 1) / 15
    inside = (p >= lo) & (p < hi)
    p = np.where(inside & (p < 0.5), lo - 0.01, np.where(inside, hi + 0.01, p))
    assert reliability_bins(y, p).counts[EMPTY_BIN] == 0
    return y, p


def _legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def _line(fig: Figure, label_start: str) -> Line2D:
    [line] = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith(label_start)]
    return line


def _error_bar_segments(fig: Figure) -> np.ndarray:
    [bars] = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    return np.array(bars.get_segments())  # (n_nonempty_bins, 2, 2): [[x, low], [x, high]]


def _assert_not_bridged(line: Line2D, bins, empty: int) -> None:
    """No drawn segment of the line goes from a point left of the empty bin to one right of it."""
    x = np.asarray(line.get_xdata(), dtype=float)
    yv = np.asarray(line.get_ydata(), dtype=float)
    lo, hi = bins.edges[empty], bins.edges[empty + 1]
    for i in range(x.size - 1):
        if np.isfinite(x[i : i + 2]).all() and np.isfinite(yv[i : i + 2]).all():
            assert not (x[i] < lo and x[i + 1] >= hi), f"segment {i} spans the empty bin"


def test_wilson_interval_equals_scipys() -> None:
    rng = np.random.default_rng(1)
    n = np.concatenate([[1, 1, 5, 5, 30, 2_000], rng.integers(1, 5_000, size=40)])
    k = np.concatenate([[0, 1, 0, 5, 17, 1_999], rng.binomial(n[6:], rng.uniform(size=40))])
    low, high = wilson_interval(k, n)
    for ki, ni, lo, hi in zip(k, n, low, high, strict=True):
        ci = binomtest(int(ki), int(ni)).proportion_ci(confidence_level=0.95, method="wilson")
        assert lo == pytest.approx(ci.low, rel=1e-12, abs=1e-15)
        assert hi == pytest.approx(ci.high, rel=1e-12, abs=1e-15)


def test_drawn_error_bars_are_scipys_wilson_interval_per_bin() -> None:
    y, p = _with_empty_middle_bin(n=800, seed=2)
    bins = reliability_bins(y, p)
    fig = reliability_diagram(y, p)
    seg = _error_bar_segments(fig)
    nonempty = np.flatnonzero(bins.counts > 0)
    assert seg.shape == (nonempty.size, 2, 2)  # one bar per non-empty bin, none for the empty one
    for (x0, low), (x1, high), b in zip(seg[:, 0], seg[:, 1], nonempty, strict=True):
        n = int(bins.counts[b])
        k = round(bins.frac_pos[b] * n)
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert x0 == x1 == pytest.approx(bins.mean_pred[b], abs=1e-12)
        assert low == pytest.approx(ci.low, abs=1e-12)
        assert high == pytest.approx(ci.high, abs=1e-12)
        assert low <= bins.frac_pos[b] <= high
    close(fig)


def test_curve_is_broken_at_an_empty_bin() -> None:
    y, p = _with_empty_middle_bin()
    bins = reliability_bins(y, p)
    fig = reliability_diagram(y, p)
    line = _line(fig, "model")
    assert np.isnan(line.get_ydata()[EMPTY_BIN])
    assert np.isfinite(np.asarray(line.get_ydata())[bins.counts > 0]).all()  # every other bin is drawn
    _assert_not_bridged(line, bins, EMPTY_BIN)
    close(fig)


def test_legend_gives_ece_and_smece_when_given() -> None:
    y, p = _data()
    ece = reliability_bins(y, p).ece
    fig = reliability_diagram(y, p)
    assert f"ECE = {ece:.3f}" in _legend_texts(fig)[1] and "smECE" not in _legend_texts(fig)[1]
    close(fig)
    fig = reliability_diagram(y, p, smece=0.0123)
    assert f"ECE = {ece:.3f}, smECE = 0.012" in _legend_texts(fig)[1]
    close(fig)


def test_references_are_drawn_on_the_same_bins_with_their_ece() -> None:
    y, p = _data(seed=3)
    p_lr = 0.5 * p + 0.25
    _, p_gap = _with_empty_middle_bin(seed=3)
    fig = reliability_diagram(y, p, references=[("logistic regression", p_lr), ("gap", p_gap)])
    texts = _legend_texts(fig)
    for label, p_ref in (("logistic regression", p_lr), ("gap", p_gap)):
        bins = reliability_bins(y, p_ref)
        assert f"{label}, ECE = {bins.ece:.3f}" in texts
        line = _line(fig, label)
        np.testing.assert_array_equal(line.get_xdata(), bins.mean_pred)  # same bins, nan where empty
        np.testing.assert_array_equal(line.get_ydata(), bins.frac_pos)
    gap_bins = reliability_bins(y, p_gap)
    _assert_not_bridged(_line(fig, "gap"), gap_bins, EMPTY_BIN)
    assert len(_error_bar_segments(fig)) == np.count_nonzero(
        reliability_bins(y, p).counts
    )  # bars: model only
    colors = {_line(fig, name).get_color() for name in ("model", "logistic regression", "gap")}
    assert len(colors) == 3
    assert fig.get_size_inches() == pytest.approx(
        reliability_diagram(y, p).get_size_inches()
    )  # same cell size
    close(fig)


def test_nonfinite_reference_is_skipped() -> None:
    y, p = _data(seed=4)
    p_bad = p.copy()
    p_bad[3] = np.inf
    fig = reliability_diagram(y, p, references=[("diverged run", p_bad), ("lr", p**2)])
    assert [
        ln.get_label() for ln in fig.axes[0].get_lines() if ln.get_label().startswith("diverged run")
    ] == ["diverged run: diverged, not drawn"]
    assert all(
        len(ln.get_xdata()) == 0 for ln in fig.axes[0].get_lines() if ln.get_label().startswith("diverged")
    )
    assert any(t.startswith("lr, ECE = ") for t in _legend_texts(fig))
    assert not any(t.startswith("diverged run, ECE") for t in _legend_texts(fig))
    close(fig)


def test_bad_reference_raises_naming_it() -> None:
    y, p = _data(100)
    with pytest.raises(ValueError, match="reference 'lr'.*same length"):
        reliability_diagram(y, p, references=[("lr", p[:-1])])
    with pytest.raises(ValueError, match=r"reference 'lr' must be probabilities in \[0, 1\]"):
        reliability_diagram(y, p, references=[("lr", p + 1.0)])


def test_diverged_model_with_references_shows_the_diverged_cell() -> None:
    y, p = _data(200)
    fig = Figure()
    ax_curve, ax_hist = fig.subplots(2, 1)
    assert draw_reliability(ax_curve, ax_hist, y, np.full(y.size, np.nan), references=[("lr", p)]) is None
    assert [t.get_text() for t in ax_curve.texts] == [DIVERGED_TEXT]
    assert ax_curve.get_lines() == []


def test_small_counts_are_printed_over_their_histogram_bars() -> None:
    y, p = _data(3_000, seed=5)
    moved = (p > 14 / 15) & (np.arange(p.size) % 5 > 0)
    p = np.where(moved, p - 0.5, p)  # last bin: a fifth of its 200 predictions stay, about 40
    bins = reliability_bins(y, p)
    fig = reliability_diagram(y, p)
    printed = [(t.get_position(), t.get_text()) for t in fig.axes[1].texts]
    small = np.flatnonzero((bins.counts > 0) & (bins.counts < 100))
    assert small.size >= 1
    assert [text for _, text in printed] == [str(bins.counts[b]) for b in small]
    for ((x, height), _), b in zip(printed, small, strict=True):
        assert bins.edges[b] < x < bins.edges[b + 1] and height == bins.counts[b]
    close(fig)
