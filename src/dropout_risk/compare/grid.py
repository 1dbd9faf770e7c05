"""The reliability grid: the runs' diagrams side by side, titled with what differs."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dropout_risk.compare.fetch import RunRecord
from dropout_risk.compare.table import key_params, panel_title


def _make_room_for_titles(fig, lines: int, fontsize: float) -> None:
    """The grid of reliability_grid leaves room for a one-line title per cell: grow the
    figure and move each row down so `lines`-line titles fit above every row."""
    if lines <= 1:
        return
    extra = (lines - 1) * fontsize * 1.25 / 72  # inches per row
    width, height = fig.get_size_inches()
    axes = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    rows = {ax: ax.get_subplotspec().get_topmost_subplotspec().rowspan.start for ax in axes}
    nrows = max(rows.values()) + 1
    boxes = {ax: ax.get_position() for ax in axes}
    new_height = height + nrows * extra
    fig.set_size_inches(width, new_height)
    for ax in axes:
        box = boxes[ax]
        y0 = box.y0 * height + (nrows - 1 - rows[ax]) * extra
        ax.set_position([box.x0, y0 / new_height, box.width, box.height * height / new_height])


GridPanel = tuple[np.ndarray, np.ndarray, str]


_TITLE_FONTSIZE = 8.5


def grid_panels(records: Sequence[RunRecord], differing: Sequence[str]) -> list[GridPanel]:
    """(val_y, val_p, title) of the runs that have predictions, in order."""
    keys = key_params(records, differing)
    return [(r.val_y, r.val_p, panel_title(r, keys)) for r in records if r.has_reliability]


def _grid_figure(panels: Sequence[GridPanel], ncols: int, first: int = 0, total: int | None = None,
                 title_lines: int | None = None):
    """reliability_grid of `panels`, which are panels first..first+len-1 of a grid of
    `total`: taller titles, the legend only on the grid's first panel (the others repeat it,
    their ECE is in the title), tick labels only where a row or column of the grid starts/ends."""
    from dropout_risk.plots.reliability import reliability_grid

    total = len(panels) if total is None else total
    fig = reliability_grid(panels, ncols=ncols)
    cells = [(fig.axes[i], fig.axes[i + 1]) for i in range(0, len(fig.axes), 2)]
    for i, (ax_curve, ax_hist) in enumerate(cells, start=first):
        ax_curve.title.set_fontsize(_TITLE_FONTSIZE)
        if i > 0 and ax_curve.get_legend() is not None:
            ax_curve.get_legend().remove()
        if i % ncols:
            ax_curve.tick_params(labelleft=False)
        if i + ncols < total:  # a panel below it: its x axis says the same
            ax_hist.tick_params(labelbottom=False)
            ax_hist.set_xlabel("")
    lines = title_lines or max(t.count("\n") + 1 for _, _, t in panels)
    _make_room_for_titles(fig, lines, _TITLE_FONTSIZE)
    return fig


def _grid_rows_png(panels: Sequence[GridPanel], ncols: int, first: int, total: int, title_lines: int) -> bytes:
    from dropout_risk.plots.png import close, figure_to_png_bytes

    fig = _grid_figure(panels, ncols, first, total, title_lines)
    try:
        return figure_to_png_bytes(fig)
    finally:
        close(fig)


def save_reliability_grid(records: Sequence[RunRecord], differing: Sequence[str], path: Path, ncols: int = 4,
                          workers: int | None = None, while_drawing: Callable[[], None] | None = None) -> None:
    """The final validation reliability diagrams of the runs that have predictions, side by side
    (titles: run name, the params that differ, ECE, AUROC), saved as PNG (save_grid_panels)."""
    save_grid_panels(grid_panels(records, differing), path, ncols, workers, while_drawing)


def save_grid_panels(panels: Sequence[GridPanel], path: Path, ncols: int = 4, workers: int | None = None,
                     while_drawing: Callable[[], None] | None = None) -> None:
    """The reliability grid of `panels` saved as PNG. Text rendering makes a 32-panel grid take
    seconds, so on Linux its rows are drawn in `workers` forked processes (default: the CPU count,
    at most 4) and stacked; the margins are fixed in inches, so the seams look like row gaps.
    `while_drawing` runs in this process meanwhile."""
    import io
    import os
    import sys

    from PIL import Image

    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    workers = min(workers or min(4, os.cpu_count() or 1), nrows)
    if workers < 2 or not sys.platform.startswith("linux") or len(panels) < 8:
        fig = _grid_figure(panels, ncols)
        fig.savefig(path)
        from dropout_risk.plots.png import close

        close(fig)
        if while_drawing:
            while_drawing()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    lines = max(t.count("\n") + 1 for _, _, t in panels)
    bounds = np.linspace(0, nrows, workers + 1).round().astype(int) * ncols
    chunks = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_grid_rows_png, panels[lo:hi], ncols, lo, len(panels), lines) for lo, hi in chunks]
        if while_drawing:
            while_drawing()
        try:
            pngs = [f.result() for f in futures]
        except BrokenProcessPool:  # a worker died (e.g. out of memory): draw here instead
            pngs = [_grid_rows_png(panels[lo:hi], ncols, lo, len(panels), lines) for lo, hi in chunks]
    parts = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in pngs]
    width = max(p.shape[1] for p in parts)  # a last row with fewer panels than ncols is narrower
    parts = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in parts]
    Image.fromarray(np.vstack(parts)).save(path, dpi=(100, 100))
