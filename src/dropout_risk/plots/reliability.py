"""Reliability diagrams: one, a pair (before/after temperature scaling) or a grid of runs side by side.

Each diagram is the observed frequency of y = 1 against the mean predicted probability per
equal-width bin (the binning of ``analysis.calibration.reliability_bins``), the diagonal of perfect
calibration, the ECE in the legend, and under it the confidence histogram (counts of predictions).

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

from dropout_risk.analysis.calibration import ReliabilityBins, check_binary_inputs, reliability_bins

DIVERGED_TEXT = "diverged: no probabilities"


DPI = 100


_CURVE_COLOR = "tab:blue"


_HIST_COLOR = "tab:gray"


Panel = tuple[ArrayLike, ArrayLike, str]


def draw_reliability(
    ax_curve: Axes,
    ax_hist: Axes,
    y: ArrayLike,
    p: ArrayLike,
    title: str = "",
    n_bins: int = 15,
    log_counts: bool = False,
) -> ReliabilityBins | None:
    """Draw one reliability diagram on two given axes (curve above, confidence histogram below).

    If ``p`` has non-finite values (a diverged model) the cell shows only the title and
    "diverged: no probabilities", and None is returned; otherwise the bins that were drawn.
    Raises ValueError on otherwise invalid input (see ``calibration.check_binary_inputs``).
    """
    y_arr, p_arr = check_binary_inputs(y, p, allow_nonfinite=True)
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
    ax_curve.plot(
        bins.mean_pred[nonempty],
        bins.frac_pos[nonempty],
        marker="o",
        ms=4,
        lw=1.5,
        color=_CURVE_COLOR,
        label=f"model, ECE = {bins.ece:.3f} (n = {p_arr.size:,})",
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
    y: ArrayLike, p: ArrayLike, title: str = "", n_bins: int = 15, log_counts: bool = False
) -> Figure:
    """One reliability diagram with its confidence histogram, as a new 4.5 x 5 in figure (dpi 100;
    each extra title line adds 0.17 in on top)."""
    extra = 0.17 * title.count("\n")
    fig, [(ax_curve, ax_hist)] = _figure_with_cells(1, 1, (4.5, 5.0 + extra), top=0.3 + extra)
    draw_reliability(ax_curve, ax_hist, y, p, title=title, n_bins=n_bins, log_counts=log_counts)
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
