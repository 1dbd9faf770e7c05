"""Reliability diagrams: one, a pair (before/after temperature scaling) or a grid of runs side by side.

Each diagram is the observed frequency of y = 1 against the mean predicted probability per
equal-width bin (the binning of ``analysis.calibration.reliability_bins``) with a 95% Wilson
interval per bin, the curve broken where bins are empty (never drawn across them), the diagonal of
perfect calibration, the ECE (and the smooth ECE when given) in the legend, optionally other
models' reliability curves on the same labels as thin reference lines, and under it the confidence
histogram (counts of predictions per bin).

Figures are built with ``matplotlib.figure.Figure`` directly, not through pyplot, so they are never
registered in pyplot's global figure list (no memory growth in long sweeps, nothing is ever shown).
Save them with ``fig.savefig``, ``figure_to_png_bytes`` or MLflow's ``log_figure``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike
from scipy.special import ndtri

from dropout_risk.analysis.calibration import (
    ReliabilityBins,
    bin_statistics,
    check_binary_inputs,
    reliability_bins,
)

DIVERGED_TEXT = "diverged: no probabilities"


DPI = 100


_CURVE_COLOR = "tab:blue"


_HIST_COLOR = "tab:gray"


_SMALL_COUNT = 100  # bins with fewer predictions get their count printed above their histogram bar


_REFERENCE_COLORS = (
    "tab:orange",
    "tab:green",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
)


Panel = tuple[ArrayLike, ArrayLike, str]


Reference = tuple[str, ArrayLike]


def wilson_interval(
    k: ArrayLike, n: ArrayLike, confidence_level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of the proportion k / n, per element (n > 0): (low, high).

    The same numbers as ``scipy.stats.binomtest(k, n).proportion_ci(confidence_level, "wilson")``
    (two-sided, no continuity correction; low is 0 when k == 0, high is 1 when k == n), vectorised:
    scipy's per-bin call also computes the test's p-value and took 20 ms for 15 bins of ~1,333
    predictions (measured), a fifth of the whole diagram's rendering time; this takes microseconds.
    tests/plots/test_reliability_intervals.py checks it against scipy.
    """
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    z = ndtri(0.5 + 0.5 * confidence_level)
    p = k_arr / n_arr
    denom = 2 * (n_arr + z**2)
    center = (2 * n_arr * p + z**2) / denom
    delta = z / denom * np.sqrt(4 * n_arr * p * (1 - p) + z**2)
    low = np.where(k_arr == 0, 0.0, center - delta)
    high = np.where(k_arr == n_arr, 1.0, center + delta)
    return low, high


def _reference_bins(
    y: np.ndarray, references: Sequence[Reference], n_bins: int
) -> list[tuple[str, ReliabilityBins | None]]:
    """Validated reference curves: (label, bins), bins None for a reference with non-finite p."""
    out = []
    for label, p_ref in references:
        _, p_arr = check_binary_inputs(y, p_ref, allow_nonfinite=True, p_name=f"reference {label!r}")
        finite = bool(np.all(np.isfinite(p_arr)))
        out.append((label, bin_statistics(y, p_arr, n_bins=n_bins) if finite else None))
    return out


def draw_reliability(
    ax_curve: Axes,
    ax_hist: Axes,
    y: ArrayLike,
    p: ArrayLike,
    title: str = "",
    n_bins: int = 15,
    log_counts: bool = False,
    *,
    references: Sequence[Reference] = (),
    smece: float | None = None,
) -> ReliabilityBins | None:
    """Draw one reliability diagram on two given axes (curve above, confidence histogram below).

    The model's curve joins the non-empty bins (observed frequency of y = 1 against mean
    prediction) with a 95% Wilson interval per bin as error bars; a run of empty bins breaks the
    curve (it is never drawn across them). The legend gives the ECE, and ``smece`` (the smooth ECE,
    ``analysis.smece``) when given. ``references`` are ``(label, p)`` pairs: other models'
    probabilities for the same ``y``, each drawn as a thin curve of its own colour on the same bins
    (also broken at empty bins, no error bars) with its ECE in the legend; a reference whose p has
    non-finite values is not drawn (the legend says so).

    If ``p`` has non-finite values (a diverged model) the cell shows only the title and
    "diverged: no probabilities", and None is returned; otherwise the bins that were drawn.
    Raises ValueError on otherwise invalid input, references included (see
    ``calibration.check_binary_inputs``).
    """
    y_arr, p_arr = check_binary_inputs(y, p, allow_nonfinite=True)
    refs = _reference_bins(y_arr, references, n_bins)
    ax_curve.set_title(title, fontsize=10, y=1.0, pad=4)  # fixed y: skips costly auto-positioning
    if not np.all(np.isfinite(p_arr)):
        ax_curve.text(
            0.5, 0.5, DIVERGED_TEXT, ha="center", va="center", color="tab:red", transform=ax_curve.transAxes
        )
        ax_curve.set_xticks([])
        ax_curve.set_yticks([])
        ax_hist.set_axis_off()
        return None

    bins = reliability_bins(y_arr, p_arr, n_bins=n_bins, strategy="uniform")
    nonempty = bins.counts > 0
    ax_curve.plot([0.0, 1.0], [0.0, 1.0], ls="--", lw=1.0, color="0.5", label="perfect calibration")
    scores = f"ECE = {bins.ece:.3f}" + ("" if smece is None else f", smECE = {smece:.3f}")
    # empty bins are nan in mean_pred and frac_pos: matplotlib breaks the line there
    ax_curve.plot(
        bins.mean_pred,
        bins.frac_pos,
        marker="o",
        ms=4,
        lw=1.5,
        color=_CURVE_COLOR,
        zorder=3,
        label=f"model, {scores}\n(n = {p_arr.size:,}; bars: 95% Wilson)",
    )
    k = np.rint(bins.frac_pos[nonempty] * bins.counts[nonempty])  # positives per bin (exact integers)
    low, high = wilson_interval(k, bins.counts[nonempty])
    frac = bins.frac_pos[nonempty]
    ax_curve.errorbar(
        bins.mean_pred[nonempty],
        frac,
        yerr=np.clip([frac - low, high - frac], 0.0, None),  # clip: rounding must not make them negative
        fmt="none",
        ecolor=_CURVE_COLOR,
        elinewidth=1.0,
        capsize=2.0,
        alpha=0.7,
        zorder=2.5,
    )
    for i, (label, ref) in enumerate(refs):
        color = _REFERENCE_COLORS[i % len(_REFERENCE_COLORS)]
        if ref is None:
            ax_curve.plot([], [], ls="none", label=f"{label}: diverged, not drawn")
            continue
        ax_curve.plot(
            ref.mean_pred,
            ref.frac_pos,
            marker="o",
            ms=2.5,
            lw=1.0,
            color=color,
            zorder=2,
            label=f"{label}, ECE = {ref.ece:.3f}",
        )
    ax_curve.set_xlim(0.0, 1.0)
    ax_curve.set_ylim(0.0, 1.0)
    ax_curve.set_ylabel("fraction of positives")
    ax_curve.legend(loc="best", fontsize=8, framealpha=0.8)
    ax_curve.tick_params(labelbottom=False)
    ax_curve.grid(alpha=0.3, lw=0.5)

    # the confidence histogram uses the very same bins (bins.counts), drawn as bars
    ax_hist.bar(
        bins.edges[:-1],
        bins.counts,
        width=np.diff(bins.edges),
        align="edge",
        color=_HIST_COLOR,
        edgecolor="white",
        linewidth=0.5,
    )
    # Small counts printed above their bars: those bars are too low to read off the axis and their
    # Wilson bars are the wide ones. All counts would not fit: "1.3k" is wider than a bin of a
    # grid cell (15 bins in 2.7 in) and labels ran into each other there (looked at the PNGs).
    small = nonempty & (bins.counts < _SMALL_COUNT)
    centres = 0.5 * (bins.edges[:-1] + bins.edges[1:])
    for x, count in zip(centres[small], bins.counts[small], strict=True):
        ax_hist.text(x, count, str(count), ha="center", va="bottom", fontsize=6, color="0.25")
    ax_hist.set_xlim(0.0, 1.0)
    if log_counts:
        ax_hist.set_yscale("log")
    else:  # head room and few ticks, so the top tick label stays clear of the curve axis
        ax_hist.set_ylim(0.0, 1.3 * max(1, int(bins.counts.max())))
        ax_hist.yaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    ax_hist.set_xlabel("predicted probability")
    ax_hist.set_ylabel("count")
    return bins


def _figure_with_cells(
    n_panels: int, ncols: int, cell_size: tuple[float, float], top: float = 0.3
) -> tuple[Figure, list[tuple[Axes, Axes]]]:
    """A figure with ``n_panels`` cells (curve axis over histogram axis, 3:1), row-major.

    Margins are fixed in inches (no constrained/tight layout: it would double the render time);
    ``top`` is the room above the first row (for its titles).
    """
    nrows = math.ceil(n_panels / ncols)
    cell_w, cell_h = cell_size
    width, height = cell_w * ncols, cell_h * nrows
    left, right, bottom, col_gap, row_gap = 0.7, 0.15, 0.5, 0.6, 0.8  # inches
    axis_w = (width - left - right - (ncols - 1) * col_gap) / ncols
    axis_h = (height - top - bottom - (nrows - 1) * row_gap) / nrows
    fig = Figure(figsize=(width, height), dpi=DPI)
    outer = fig.add_gridspec(
        nrows,
        ncols,
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=col_gap / axis_w,
        hspace=row_gap / axis_h,
    )
    cells = []
    for i in range(n_panels):
        inner = outer[divmod(i, ncols)].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.1)
        ax_curve = fig.add_subplot(inner[0])
        cells.append((ax_curve, fig.add_subplot(inner[1], sharex=ax_curve)))
    return fig, cells


def reliability_diagram(
    y: ArrayLike,
    p: ArrayLike,
    title: str = "",
    n_bins: int = 15,
    log_counts: bool = False,
    *,
    references: Sequence[Reference] = (),
    smece: float | None = None,
) -> Figure:
    """One reliability diagram with its confidence histogram, as a new 4.5 x 5 in figure (dpi 100;
    each extra title line adds 0.17 in on top). ``references`` (other models' ``(label, p)`` on the
    same y) and ``smece``: see ``draw_reliability``."""
    extra = 0.17 * title.count("\n")
    fig, [(ax_curve, ax_hist)] = _figure_with_cells(1, 1, (4.5, 5.0 + extra), top=0.3 + extra)
    draw_reliability(
        ax_curve,
        ax_hist,
        y,
        p,
        title=title,
        n_bins=n_bins,
        log_counts=log_counts,
        references=references,
        smece=smece,
    )
    return fig


def reliability_grid(
    panels: Sequence[Panel], ncols: int = 4, n_bins: int = 15, log_counts: bool = False
) -> Figure:
    """Reliability diagrams side by side, in the given order, ``ncols`` per row (3.4 x 4 in per cell).

    Each panel is ``(y, p, title)``; a panel whose p is non-finite (a diverged model) is drawn as an
    empty cell with its title and "diverged: no probabilities".
    """
    if len(panels) == 0:
        raise ValueError("reliability_grid needs at least one (y, p, title) panel")
    if ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    ncols = min(ncols, len(panels))
    fig, cells = _figure_with_cells(len(panels), ncols, (3.4, 4.0))
    for i, ((y, p, title), (ax_curve, ax_hist)) in enumerate(zip(panels, cells, strict=True)):
        draw_reliability(ax_curve, ax_hist, y, p, title=title, n_bins=n_bins, log_counts=log_counts)
        if i % ncols > 0:  # one y label per row is enough
            ax_curve.set_ylabel("")
            ax_hist.set_ylabel("")
    return fig


def reliability_pair(
    y: ArrayLike,
    p_before: ArrayLike,
    p_after: ArrayLike,
    titles: tuple[str, str] = ("before", "after"),
    n_bins: int = 15,
) -> Figure:
    """Two reliability diagrams of the same labels side by side (e.g. before/after temperature scaling)."""
    return reliability_grid([(y, p_before, titles[0]), (y, p_after, titles[1])], ncols=2, n_bins=n_bins)


_TRAIN_COLOR, _VAL_COLOR = "tab:blue", "tab:orange"


_ECE_COLOR, _AUROC_COLOR = "tab:green", "tab:purple"


_DIVERGED_COLOR, _FAILED_COLOR, _THEORY_COLOR = "tab:red", "0.55", "black"
