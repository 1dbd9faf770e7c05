"""One run's loss curves as a small figure (the `loss.png` every run logs at its artifact root, so
the UI's compare page shows them side by side): training loss per step, validation loss per epoch
at the step that ended the epoch. Built without pyplot and cheap to draw (~25 ms with its PNG)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator

from dropout_risk.plots.reliability import _TRAIN_COLOR, _VAL_COLOR, DPI


def loss_figure(train_loss: Sequence[float], val_loss: Sequence[float], steps_per_epoch: int, title: str,
                diverged_at_step: int | None = None) -> Figure:
    """A 4.5 x 3 in figure: train loss per step (every point when short, else thinned to ~400),
    val loss per epoch at step epoch x `steps_per_epoch` (clipped to the steps trained), a log y
    axis when the finite losses span more than a factor of 30, and a red mark where the run diverged."""
    fig = Figure(figsize=(4.5, 3.0), dpi=DPI)
    ax = fig.add_axes((0.14, 0.15, 0.83, 0.7))
    train = np.asarray(train_loss, dtype=np.float64)
    steps = np.arange(1, len(train) + 1)
    if len(train) > 400:  # a line of 400 points looks the same and draws much faster
        keep = np.unique(np.r_[np.linspace(0, len(train) - 1, 400).astype(int), len(train) - 1])
        steps, train = steps[keep], train[keep]
    ok = np.isfinite(train)
    ax.plot(steps[ok], train[ok], color=_TRAIN_COLOR, lw=0.8, label="train (per step)")
    val = np.asarray(val_loss, dtype=np.float64)
    vx = np.minimum(np.arange(1, len(val) + 1) * max(steps_per_epoch, 1), max(len(train_loss), 1))
    vok = np.isfinite(val)
    ax.plot(vx[vok], val[vok], color=_VAL_COLOR, marker="o", ms=3, lw=1.2, label="val (per epoch)")
    finite = np.r_[train[ok], val[vok]]
    positive = finite[finite > 0]
    if len(positive) and positive.max() / positive.min() > 30:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(numticks=5))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.yaxis.set_minor_locator(NullLocator())  # minor ticks and an automatic title position cost most of a draw
    if diverged_at_step is not None:
        ax.axvline(diverged_at_step, color="tab:red", lw=1, ls="--", label=f"diverged (step {diverged_at_step})")
    if len(finite) == 0:
        ax.text(0.5, 0.5, "no finite loss", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, lw=0.5)
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    fig.text(0.5, 0.97, title, ha="center", va="top", fontsize=8)
    return fig


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """The optimiser steps of one epoch over `n_rows` (the last batch may be short)."""
    return max(1, math.ceil(n_rows / max(batch_size, 1)))
