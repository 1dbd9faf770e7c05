"""Reliability diagrams: one, a pair (before/after temperature scaling) or a grid of runs side by side.

Each diagram is the observed frequency of y = 1 against the mean predicted probability per
equal-width bin (the binning of ``calibration.reliability_bins``), the diagonal of perfect
calibration, the ECE in the legend, and under it the confidence histogram (counts of predictions).

Figures are built with ``matplotlib.figure.Figure`` directly, not through pyplot, so they are never
registered in pyplot's global figure list (no memory growth in long sweeps, nothing is ever shown).
Save them with ``fig.savefig``, ``figure_to_png_bytes`` or MLflow's ``log_figure``.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless by default; keep a backend a notebook already chose
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogFormatterSciNotation, MaxNLocator  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402

from dropout_risk.calibration import ReliabilityBins, check_binary_inputs, reliability_bins  # noqa: E402

__all__ = [
    "DIVERGED_TEXT",
    "backprop_flow",
    "close",
    "divergence_chart",
    "draw_reliability",
    "figure_to_png_bytes",
    "reliability_diagram",
    "reliability_grid",
    "reliability_pair",
    "save_tiled_png",
]

DIVERGED_TEXT = "diverged: no probabilities"
_DPI = 100
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
    fig = Figure(figsize=(width, height), dpi=_DPI)
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


def save_tiled_png(images: Sequence, ncols: int, path) -> tuple[int, int]:
    """Write PIL images side by side as one PNG at ``path``: ``ncols`` per row, in the given order,
    each cell as large as the largest image (smaller ones and an incomplete last row padded with
    white). Returns the PNG's (width, height).

    Written one row of cells at a time, each image closed once drawn: memory holds one row (and
    the images as given, e.g. opened lazily with ``PIL.Image.open``), however many rows there are.
    Pillow can only encode a whole image in memory (a 48-diagram sweep grid: 33 MB), so this
    writes the PNG chunks itself: IHDR, zlib-compressed scanlines in IDAT chunks, IEND."""
    import struct
    import zlib

    from PIL import Image

    if len(images) == 0:
        raise ValueError("save_tiled_png needs at least one image")
    if ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    ncols = min(ncols, len(images))
    nrows = math.ceil(len(images) / ncols)
    w = max(im.size[0] for im in images)
    h = max(im.size[1] for im in images)
    width, height = ncols * w, nrows * h

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(6)
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))  # 8-bit RGB
        for r in range(nrows):
            band = Image.new("RGB", (width, h), "white")
            for c, im in enumerate(images[r * ncols : (r + 1) * ncols]):
                band.paste(im.convert("RGB"), (c * w, 0))
                im.close()
            rows = np.asarray(band)
            lines = np.concatenate([np.zeros((h, 1), np.uint8), rows.reshape(h, -1)], axis=1)  # filter 0
            out.write(chunk(b"IDAT", packer.compress(lines.tobytes())))
        out.write(chunk(b"IDAT", packer.flush()))
        out.write(chunk(b"IEND", b""))
    return width, height


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


def figure_to_png_bytes(fig: Figure, dpi: int | None = None) -> bytes:
    """The figure rendered as PNG bytes (at the figure's own dpi unless ``dpi`` is given)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi if dpi is not None else fig.dpi)
    return buffer.getvalue()


def close(fig: Figure) -> None:
    """Release a figure: remove it from pyplot if pyplot made it, and drop its artists."""
    plt.close(fig)
    fig.clear()


# --------------------------------------------------------------------------------------------
# The divergence chart: outcome and final metrics of a learning-rate sweep, with the theory on it
# --------------------------------------------------------------------------------------------

_OUTCOMES = ("converged", "diverged", "pruned", "failed")
_TRAIN_COLOR, _VAL_COLOR = "tab:blue", "tab:orange"
_ECE_COLOR, _AUROC_COLOR = "tab:green", "tab:purple"
_DIVERGED_COLOR, _FAILED_COLOR, _THEORY_COLOR = "tab:red", "0.55", "black"
_TOP_ROW = 0.94  # axes-fraction height of the row of diverged / failed markers
_DATA_TOP = 0.68  # the loss curves stay below this axes fraction, under that row
_FAR_DECADES = 1.0  # a threshold this close outside the lr range widens the axis; farther: an edge note


def _series(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)


def _log_limits(values: np.ndarray, pad: float, min_span: float) -> tuple[float, float]:
    """log10 (low, high) of the positive finite values, padded by ``pad`` x their log span."""
    logs = np.log10(values[np.isfinite(values) & (values > 0)])
    lo, hi = float(logs.min()), float(logs.max())
    if hi - lo < min_span:
        mid = 0.5 * (lo + hi)
        lo, hi = mid - 0.5 * min_span, mid + 0.5 * min_span
    span = hi - lo
    return lo - pad * span, hi + pad * span


def _fmt(value: float) -> str:
    return f"{value:.3g}"


class _PlainLogFormatter(LogFormatterSciNotation):
    """Log-axis tick labels as plain numbers (0.4, 1, 2) where matplotlib would label a tick at all."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:.3g}" if super().__call__(x, pos) else ""


def divergence_chart(
    summary: pd.DataFrame,
    threshold: float | None,
    optimizer: str,
    boundary: tuple[float | None, float | None] = (None, None),
) -> Figure:
    """The divergence chart of a learning-rate sweep: a new 9 x 7 in figure (dpi 100), two panels, shared log lr axis.

    ``summary`` has one row per trial with columns ``trial``, ``phase`` (``scan`` | ``refine``),
    ``lr``, ``outcome`` (``converged`` | ``diverged`` | ``pruned`` | ``failed``),
    ``diverged_at_step`` (NaN if none), ``train_loss``, ``val_loss``, ``auroc``, ``ece``, ``brier``,
    ``duration_s``; only ``lr`` and ``outcome`` are required (a missing metric column is all NaN,
    a missing ``phase`` means ``scan``), and NaN metrics are simply not drawn.

    Top panel (log y): final train loss and validation log loss per trial. Converged scan trials
    are joined by lines in lr order; refine trials are separate diamonds; pruned trials hollow
    triangles (their "final" loss is from the epoch they were stopped at). Diverged trials are red
    crosses in a row at the top of the panel, each labelled with the step it diverged at; failed
    trials are grey squares in the same row. Bottom panel: validation ECE and AUROC (both in [0, 1]).

    Both panels show ``threshold`` (2/lambda_max from ``divergence.sharpness``) as a vertical
    dash-dot line, labelled as the plain-gradient-descent stability threshold: adaptive
    optimisers (AdamW, ...) and momentum have other thresholds. A threshold within one decade
    outside the trials' lr range widens the axis; a farther one is an arrow at the edge with its
    value. ``boundary`` = (largest converged lr, smallest diverged lr), e.g. from
    ``divergence.observed_boundary``, is shaded between the two dotted lines (one line if only
    one end is known). The title names the optimiser and counts the outcomes.

    Raises ValueError if ``lr`` or ``outcome`` is missing, an lr is not a positive number, or an
    outcome is not one of the four above. An empty summary gives a chart saying "no trials".
    """
    missing = [c for c in ("lr", "outcome") if c not in summary.columns]
    if missing:
        raise ValueError(
            f"divergence_chart: summary lacks column(s) {missing}; it has {list(summary.columns)} "
            "(one row per trial with at least lr and outcome)"
        )
    frame = summary.reset_index(drop=True)
    lr = _series(frame, "lr")
    if not np.all(np.isfinite(lr) & (lr > 0)):
        bad = frame.loc[~(np.isfinite(lr) & (lr > 0)), "lr"].tolist()
        raise ValueError(f"divergence_chart: every lr must be a positive number (log axis), got {bad[:5]}")
    outcome = frame["outcome"].astype(str).to_numpy()
    unknown = sorted(set(outcome) - set(_OUTCOMES))
    if unknown:
        raise ValueError(f"divergence_chart: unknown outcome(s) {unknown}: use one of {list(_OUTCOMES)}")
    phase = frame["phase"].astype(str).to_numpy() if "phase" in frame.columns else np.full(len(frame), "scan")
    train_loss, val_loss = _series(frame, "train_loss"), _series(frame, "val_loss")
    ece, auroc = _series(frame, "ece"), _series(frame, "auroc")
    step = _series(frame, "diverged_at_step")

    # layout: fixed margins in inches, legends in a column on the right
    width, height = 9.0, 7.0
    left, right, top, bottom, gap = 0.8, 2.7, 0.75, 0.55, 0.2
    fig = Figure(figsize=(width, height), dpi=_DPI)
    grid = fig.add_gridspec(
        2,
        1,
        height_ratios=[3, 2],
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        hspace=gap / ((height - top - bottom - gap) / 2),
    )
    ax_loss = fig.add_subplot(grid[0])
    ax_cal = fig.add_subplot(grid[1], sharex=ax_loss)
    counts = {name: int(np.sum(outcome == name)) for name in _OUTCOMES}
    fig.suptitle(f"Learning-rate sweep, optimizer: {optimizer}", x=left / width, ha="left", y=1 - 0.12 / height, fontsize=12)
    fig.text(
        left / width,
        1 - 0.52 / height,
        f"{len(frame)} trial{'s' if len(frame) != 1 else ''}: " + ", ".join(f"{counts[k]} {k}" for k in _OUTCOMES),
        fontsize=9,
        color="0.3",
    )
    for ax in (ax_loss, ax_cal):
        ax.set_xscale("log")
        ax.grid(alpha=0.3, lw=0.5, which="major")
    ax_loss.set_yscale("log")
    ax_loss.yaxis.set_major_formatter(_PlainLogFormatter())
    ax_loss.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax_loss.tick_params(labelbottom=False)
    ax_loss.set_ylabel("final loss (log scale)")
    ax_cal.set_ylabel("validation metric")
    ax_cal.set_xlabel("learning rate (log scale)")
    ax_cal.set_ylim(0.0, 1.05)

    if len(frame) == 0:
        ax_loss.set_xlim(1e-4, 1.0)
        ax_loss.set_ylim(0.1, 10.0)
        ax_loss.text(0.5, 0.5, "no trials", ha="center", va="center", transform=ax_loss.transAxes)
        return fig

    # x range: the trials' lrs, widened to a threshold that is not too far outside them
    x_lo, x_hi = _log_limits(lr, pad=0.06, min_span=1.0)
    thr = float(threshold) if threshold is not None and np.isfinite(threshold) and threshold > 0 else None
    if thr is not None:
        t = math.log10(thr)
        if x_lo - _FAR_DECADES <= t < x_lo:
            x_lo = t - 0.04 * (x_hi - t)
        elif x_hi < t <= x_hi + _FAR_DECADES:
            x_hi = t + 0.04 * (t - x_lo)
    ax_loss.set_xlim(10**x_lo, 10**x_hi)

    # --- top panel: losses --------------------------------------------------------------------
    has_result = (outcome == "converged") | (outcome == "pruned")
    losses = np.concatenate([train_loss[has_result], val_loss[has_result]])
    losses = losses[np.isfinite(losses) & (losses > 0)]
    if losses.size:
        lo, hi = _log_limits(losses, pad=0.0, min_span=0.3)
        span = (hi - lo) / (_DATA_TOP - 0.05)
        ax_loss.set_ylim(10 ** (lo - 0.05 * span), 10 ** (lo - 0.05 * span + span))
    else:
        ax_loss.set_ylim(0.1, 10.0)
        ax_loss.tick_params(axis="y", which="both", left=False, labelleft=False)
        ax_loss.text(
            0.5, 0.45, "no trial converged: no losses to show", ha="center", va="center",
            color="0.3", transform=ax_loss.transAxes,
        )
    scan_ok = (outcome == "converged") & (phase != "refine")
    refine_ok = (outcome == "converged") & (phase == "refine")
    pruned = outcome == "pruned"
    order = np.argsort(lr[scan_ok], kind="stable")
    for values, color, name in ((train_loss, _TRAIN_COLOR, "train loss"), (val_loss, _VAL_COLOR, "val log loss")):
        if scan_ok.any():
            ax_loss.plot(lr[scan_ok][order], values[scan_ok][order], marker="o", ms=4, lw=1.5, color=color,
                         label=f"{name} (scan)")
        if refine_ok.any():
            ax_loss.plot(lr[refine_ok], values[refine_ok], ls="none", marker="D", ms=5, color=color,
                         markeredgecolor="black", markeredgewidth=0.5, label=f"{name} (refine)")
        if pruned.any():
            ax_loss.plot(lr[pruned], values[pruned], ls="none", marker="v", ms=6, color=color,
                         markerfacecolor="none", label=f"{name} (pruned)")

    top_row = ax_loss.get_xaxis_transform()  # x in data, y in axes fraction
    diverged = outcome == "diverged"
    if diverged.any():
        ax_loss.plot(lr[diverged], np.full(int(diverged.sum()), _TOP_ROW), ls="none", marker="x", ms=8, mew=2,
                     color=_DIVERGED_COLOR, transform=top_row, clip_on=False,
                     label="diverged (at step ...)")
        for x_value, s in zip(lr[diverged], step[diverged], strict=True):
            if np.isfinite(s):
                ax_loss.annotate(f"step {int(s)}", xy=(x_value, _TOP_ROW), xycoords=top_row, xytext=(2, -7),
                                 textcoords="offset points", rotation=90, ha="left", va="top", fontsize=7,
                                 color=_DIVERGED_COLOR)
    failed = outcome == "failed"
    if failed.any():
        ax_loss.plot(lr[failed], np.full(int(failed.sum()), _TOP_ROW), ls="none", marker="s", ms=6,
                     color=_FAILED_COLOR, transform=top_row, clip_on=False, label="failed (no result)")

    # --- bottom panel: calibration and discrimination -----------------------------------------
    if scan_ok.any():
        ax_cal.plot(lr[scan_ok][order], ece[scan_ok][order], marker="o", ms=4, lw=1.5, color=_ECE_COLOR,
                    label="ECE (scan)")
        ax_cal.plot(lr[scan_ok][order], auroc[scan_ok][order], marker="o", ms=4, lw=1.5, color=_AUROC_COLOR,
                    label="AUROC (scan)")
    if refine_ok.any():
        for values, color, name in ((ece, _ECE_COLOR, "ECE"), (auroc, _AUROC_COLOR, "AUROC")):
            ax_cal.plot(lr[refine_ok], values[refine_ok], ls="none", marker="D", ms=5, color=color,
                        markeredgecolor="black", markeredgewidth=0.5, label=f"{name} (refine)")
    if pruned.any():
        for values, color, name in ((ece, _ECE_COLOR, "ECE"), (auroc, _AUROC_COLOR, "AUROC")):
            ax_cal.plot(lr[pruned], values[pruned], ls="none", marker="v", ms=6, color=color,
                        markerfacecolor="none", label=f"{name} (pruned)")
    shown = np.concatenate([ece[has_result], auroc[has_result]])
    if not np.isfinite(shown).any():
        ax_cal.text(0.5, 0.5, "no validation metrics (no converged or pruned trial with finite values)",
                    ha="center", va="center", color="0.3", transform=ax_cal.transAxes)
    if diverged.any():  # where the diverged trials are, without repeating their markers
        for x_value in lr[diverged]:
            ax_cal.axvline(x_value, ymin=0.96, ymax=1.0, color=_DIVERGED_COLOR, lw=1.5,
                           label="diverged (no metrics)" if x_value == lr[diverged][0] else None)

    # --- theory and the observed boundary, on both panels -------------------------------------
    b_lo, b_hi = boundary
    b_lo = float(b_lo) if b_lo is not None and np.isfinite(b_lo) and b_lo > 0 else None
    b_hi = float(b_hi) if b_hi is not None and np.isfinite(b_hi) and b_hi > 0 else None
    for i, ax in enumerate((ax_loss, ax_cal)):
        if b_lo is not None and b_hi is not None:
            ax.axvspan(min(b_lo, b_hi), max(b_lo, b_hi), color=_DIVERGED_COLOR, alpha=0.08, lw=0,
                       label=f"observed boundary: converged\nat {_fmt(b_lo)}, diverged at {_fmt(b_hi)}"
                       if i == 0 else None)
        if b_lo is not None:
            ax.axvline(b_lo, color=_DIVERGED_COLOR, ls=":", lw=1.2,
                       label=f"largest converged lr = {_fmt(b_lo)}" if i == 0 and b_hi is None else None)
        if b_hi is not None:
            ax.axvline(b_hi, color=_DIVERGED_COLOR, ls=":", lw=1.2,
                       label=f"smallest diverged lr = {_fmt(b_hi)}" if i == 0 and b_lo is None else None)

    note = "plain-GD stability threshold\n(adaptive optimisers, e.g. AdamW,\nhave other thresholds)"
    if thr is None:
        reason = "not estimated" if threshold is None else f"undefined ({threshold!r})"
        ax_loss.plot([], [], ls="none", label=f"2/λ_max: {reason}")
    elif 10**x_lo <= thr <= 10**x_hi:
        for i, ax in enumerate((ax_loss, ax_cal)):
            ax.axvline(thr, color=_THEORY_COLOR, ls="-.", lw=1.3,
                       label=f"2/λ_max = {_fmt(thr)}\n{note}" if i == 0 else None)
        ax_loss.text(thr, 1.01, "2/λ_max", ha="center", va="bottom", fontsize=8, color=_THEORY_COLOR,
                     transform=top_row)
    else:  # far outside the lrs tried: an arrow at the edge, the value in the legend
        right_side = thr > 10**x_hi
        where = "right" if right_side else "left"
        ax_loss.plot([], [], color=_THEORY_COLOR, ls="-.", lw=1.3,
                     label=f"2/λ_max = {_fmt(thr)} (off the chart,\n{where}): {note}")
        edge = 0.995 if right_side else 0.005
        ax_loss.annotate(
            f"2/λ_max = {_fmt(thr)}\n(plain-GD threshold)",
            xy=(edge, 0.5),
            xytext=(edge - 0.18 if right_side else edge + 0.18, 0.5),
            xycoords="axes fraction",
            ha="right" if right_side else "left",
            va="center",
            fontsize=8,
            color=_THEORY_COLOR,
            arrowprops={"arrowstyle": "-|>", "color": _THEORY_COLOR, "lw": 1.2},
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    if not diverged.any():
        ax_loss.plot([], [], ls="none", label="no trial diverged")

    for ax in (ax_loss, ax_cal):
        if ax.get_legend_handles_labels()[1]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, framealpha=0.9)
    return fig


# --------------------------------------------------------------------------------------------
# Backprop flow: per-layer magnitudes forward and backward, at the start and end of training
# --------------------------------------------------------------------------------------------


def backprop_flow(first: dict[str, np.ndarray], last: dict[str, np.ndarray], layer_names: Sequence[str],
                  labels: tuple[str, str], title: str) -> Figure:
    """Layers left to right. Top: forward activation magnitudes RMS ||h_l|| (l = 0 .. L+1).
    Bottom: backward error-signal magnitudes RMS ||delta_l|| (l = 1 .. L+1, arrows pointing from
    the loss back to the input) and the weight-gradient norms ||dL/dW_l|| (dashed). One line per
    moment (`labels`: e.g. start and end of training); y on a log scale."""
    fig = Figure(figsize=(8.0, 6.2), dpi=_DPI, layout="constrained")
    ax_f, ax_b = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(layer_names))
    colors = ("tab:blue", "tab:orange")
    for profile, label, color in zip((first, last), labels, colors, strict=True):
        ax_f.plot(x, _positive(profile["act"]), "o-", color=color, label=label)
        ax_b.plot(x[1:], _positive(profile["error"]), "o-", color=color, label=f"{label}: error signal ||δ_l||")
        ax_b.plot(x[1:], _positive(profile["grad"]), "s--", color=color, alpha=0.7,
                  label=f"{label}: weight gradient ||dL/dW_l||")
        err = _positive(profile["error"])
        for i in range(len(err) - 1, 0, -1):  # the backward direction: from layer i+1 to layer i
            if np.isfinite(err[i]) and np.isfinite(err[i - 1]):
                ax_b.annotate("", xy=(x[i], err[i - 1]), xytext=(x[i + 1], err[i]),
                              arrowprops={"arrowstyle": "->", "color": color, "alpha": 0.35, "lw": 1})
    ax_f.set_title("forward: activation magnitude per layer  →", loc="left", fontsize=10)
    ax_b.set_title("←  backward: error signal and gradient per layer", loc="left", fontsize=10)
    for ax in (ax_f, ax_b):
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=8, loc="best")
    ax_f.set_ylabel("RMS ||h_l|| over students")
    ax_b.set_ylabel("magnitude")
    ax_b.set_xticks(x, list(layer_names))
    fig.suptitle(title, fontsize=11)
    return fig


def _positive(values: np.ndarray) -> np.ndarray:
    """Log axes cannot show 0 or non-finite values: those points are left out (NaN)."""
    v = np.asarray(values, dtype=float)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)
