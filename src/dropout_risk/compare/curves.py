"""The loss curves of the compared runs on one figure."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dropout_risk.compare.fetch import RunRecord


def _log_ylim(values: list[np.ndarray]) -> tuple[float, float] | None:
    """Log-axis limits around the positive finite values, padded; None if there are none."""
    flat = np.concatenate(values) if values else np.empty(0)
    flat = flat[np.isfinite(flat) & (flat > 0)]
    if flat.size == 0:
        return None
    lo, hi = math.log10(flat.min()), math.log10(flat.max())
    if hi - lo < 0.2:
        mid = 0.5 * (lo + hi)
        lo, hi = mid - 0.1, mid + 0.1
    pad = 0.06 * (hi - lo)
    return 10 ** (lo - pad), 10 ** (hi + pad)


def loss_curves_figure(records: Sequence[RunRecord]):
    """Two panels: train/loss per step and val/loss per epoch of every run, overlaid, log y.
    The y range is that of the runs that did not diverge; a diverged run's curve runs off the
    top and its last finite point is a cross (on the top edge when it is off the chart).
    Non-finite points are left out."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatterSciNotation, MaxNLocator

    class PlainLog(LogFormatterSciNotation):  # 0.4, 0.6, 1, 2 instead of 4 x 10^-1
        def __call__(self, x, pos=None):
            return f"{x:.3g}" if super().__call__(x, pos) else ""

    n = len(records)
    legend_cols = 1 if n <= 16 else 2
    legend_w = 2.4 * legend_cols
    width, height = 10.5 + legend_w, 4.6
    fig = Figure(figsize=(width, height), dpi=100)
    left, right, top, bottom, gap = 0.8, legend_w + 0.2, 0.45, 0.6, 0.75
    axis_w = (width - left - right - gap) / 2
    grid = fig.add_gridspec(1, 2, left=left / width, right=1 - right / width, top=1 - top / height,
                            bottom=bottom / height, wspace=gap / axis_w)
    ax_train, ax_val = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    panels = ((ax_train, "train/loss", None, "train/loss (per step)", "step"),
              (ax_val, "val/loss", "o", "val/loss (per epoch)", "epoch"))
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    styles = ["-", "--", ":", "-."]
    handles, labels = [], []
    for i, rec in enumerate(records):
        color, ls = cmap(i % cmap.N), styles[(i // cmap.N) % len(styles)]
        handle = None
        for ax, key, marker, _, _ in panels:
            steps, values = rec.curves.get(key, (np.empty(0), np.empty(0)))
            ok = np.isfinite(values) & (values > 0)
            if ok.any():
                (line,) = ax.plot(steps[ok], values[ok], color=color, ls=ls, lw=1.2, marker=marker, ms=3)
                handle = handle or line
        if handle is None:
            (handle,) = ax_train.plot([], [], color=color, ls=ls)
        handles.append(handle)
        labels.append(rec.name + (" (diverged)" if rec.outcome == "diverged" else "")
                      + ("" if rec.curves else " (no loss curves)"))

    for ax, key, _, title, xlabel in panels:
        ax.set_title(title, fontsize=10, y=1.0, pad=4)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, lw=0.5)
        curves = {r.run_id: r.curves[key][1] for r in records if key in r.curves}
        stable = [v for r in records if r.outcome != "diverged" and r.run_id in curves for v in [curves[r.run_id]]]
        limits = _log_ylim(stable) or _log_ylim(list(curves.values()))
        if limits is None:
            ax.text(0.5, 0.5, f"no finite {key} logged", ha="center", va="center", color="0.3",
                    transform=ax.transAxes)
            continue
        ax.set_yscale("log")
        ax.set_ylim(*limits)
        ax.yaxis.set_major_formatter(PlainLog())
        ax.yaxis.set_minor_formatter(PlainLog(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        for i, rec in enumerate(records):
            if rec.outcome != "diverged" or key not in rec.curves:
                continue
            steps, values = rec.curves[key]
            ok = np.flatnonzero(np.isfinite(values) & (values > 0))
            if ok.size:
                y = min(values[ok[-1]], limits[1])
                ax.plot([steps[ok[-1]]], [y], ls="none", marker="x", ms=8, mew=2, color=cmap(i % cmap.N),
                        clip_on=False, zorder=5)
    ax_train.set_ylabel("loss (log scale)")
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1 - (legend_w + 0.05) / width, 1 - top / height),
               fontsize=7, ncols=legend_cols, frameon=False, title="run (x: diverged)", title_fontsize=8)
    return fig
