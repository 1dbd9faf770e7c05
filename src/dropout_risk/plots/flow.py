"""The backprop-flow figure: layer magnitudes forward and backward, before and after training."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from dropout_risk.plots.reliability import DPI


def backprop_flow(first: dict[str, np.ndarray], last: dict[str, np.ndarray], layer_names: Sequence[str],
                  labels: tuple[str, str], title: str) -> Figure:
    """Layers left to right. Top: forward activation magnitudes RMS ||h_l|| (l = 0 .. L+1).
    Bottom: backward error-signal magnitudes RMS ||delta_l|| (l = 1 .. L+1, arrows pointing from
    the loss back to the input) and the weight-gradient norms ||dL/dW_l|| (dashed). One line per
    moment (`labels`: e.g. start and end of training); y on a log scale."""
    fig = Figure(figsize=(8.0, 6.2), dpi=DPI, layout="constrained")
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
