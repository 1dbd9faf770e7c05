"""The divergence chart of a learning-rate sweep."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation

from dropout_risk.analysis.boundary import interval_of, per_lr
from dropout_risk.format import sig
from dropout_risk.plots.reliability import (
    _AUROC_COLOR,
    _DIVERGED_COLOR,
    _ECE_COLOR,
    _FAILED_COLOR,
    _THEORY_COLOR,
    _TRAIN_COLOR,
    _VAL_COLOR,
    DPI,
)
from dropout_risk.tracking.names import CONVERGED, OUTCOMES

_OUTCOMES = OUTCOMES


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


class _PlainLogFormatter(LogFormatterSciNotation):
    """Log-axis tick labels as plain numbers (0.4, 1, 2) where matplotlib would label a tick at all."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:.3g}" if super().__call__(x, pos) else ""


_REFERENCE_COLORS = ("tab:green", "tab:brown", "tab:olive")


BAND_LABEL = "divergence sets in\n(0 → all seeds diverge)"


def _seed_spreads(ax, per: pd.DataFrame, series: tuple[tuple[str, str, str], ...]) -> None:
    """Per scanned lr, the median over the seeds that did not diverge, with a min-max bar."""
    for column, color, name in series:
        med = per[f"{column}_median"].to_numpy(dtype=np.float64)
        ok = np.isfinite(med)
        if ok.any():
            bars = np.vstack([med - per[f"{column}_min"].to_numpy(), per[f"{column}_max"].to_numpy() - med])
            ax.errorbar(per.lr.to_numpy()[ok], med[ok], yerr=bars[:, ok], marker="o", ms=4, lw=1.5, color=color,
                        elinewidth=1.2, capsize=2.5, label=f"{name}: median of seeds\n(bar: min–max over seeds)")


def _fraction_marks(ax, per: pd.DataFrame, top_row) -> None:
    """A cross in the top row at each lr where a seed diverged, labelled diverged/finished seeds."""
    hit = per[per.n_diverged > 0]
    if len(hit):
        ax.plot(hit.lr, np.full(len(hit), _TOP_ROW), ls="none", marker="x", ms=8, mew=2, color=_DIVERGED_COLOR,
                transform=top_row, clip_on=False, label="seeds diverged at this lr\n(diverged/finished)")
    for x_value, k, n in zip(hit.lr, hit.n_diverged, hit.n_finished, strict=True):
        ax.annotate(f"{k}/{n}", xy=(x_value, _TOP_ROW), xycoords=top_row, xytext=(0, -8), textcoords="offset points",
                    ha="center", va="top", fontsize=7, color=_DIVERGED_COLOR)


def _interval_band(axes, interval: tuple[float | None, float | None], any_diverged: bool) -> None:
    """The lrs from the last where no seed diverged to the first from which every seed did."""
    lo, hi = interval
    for i, ax in enumerate(axes):
        if lo is not None and hi is not None:
            ax.axvspan(lo, hi, color=_DIVERGED_COLOR, alpha=0.1, lw=0, label=BAND_LABEL if i == 0 else None)
        if lo is not None:
            ax.axvline(lo, color=_DIVERGED_COLOR, ls=":", lw=1.2,
                       label=f"no seed diverged at lr ≤ {sig(lo)}" if i == 0 else None)
        if hi is not None:
            ax.axvline(hi, color=_DIVERGED_COLOR, ls="--", lw=1.2,
                       label=f"every seed diverged at lr ≥ {sig(hi)}" if i == 0 else None)
    if any_diverged and hi is None:
        axes[0].plot([], [], ls="none", label="no lr where every seed diverged")
    if any_diverged and lo is None:
        axes[0].plot([], [], ls="none", label="a seed diverged at the smallest lr")


def _observed_band(axes, boundary: tuple[float | None, float | None]) -> None:
    """One seed per lr: shade from the largest converged to the smallest diverged lr."""
    b_lo, b_hi = boundary
    b_lo = float(b_lo) if b_lo is not None and np.isfinite(b_lo) and b_lo > 0 else None
    b_hi = float(b_hi) if b_hi is not None and np.isfinite(b_hi) and b_hi > 0 else None
    for i, ax in enumerate(axes):
        if b_lo is not None and b_hi is not None:
            ax.axvspan(min(b_lo, b_hi), max(b_lo, b_hi), color=_DIVERGED_COLOR, alpha=0.08, lw=0,
                       label=f"observed boundary: converged\nat {sig(b_lo)}, diverged at {sig(b_hi)}"
                       if i == 0 else None)
        if b_lo is not None:
            ax.axvline(b_lo, color=_DIVERGED_COLOR, ls=":", lw=1.2,
                       label=f"largest converged lr = {sig(b_lo)}" if i == 0 and b_hi is None else None)
        if b_hi is not None:
            ax.axvline(b_hi, color=_DIVERGED_COLOR, ls=":", lw=1.2,
                       label=f"smallest diverged lr = {sig(b_hi)}" if i == 0 and b_lo is None else None)


def divergence_chart(
    summary: pd.DataFrame,
    threshold: float | None,
    optimizer: str,
    boundary: tuple[float | None, float | None] = (None, None),
    references: dict[str, float] | None = None,
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

    ``references`` maps a label (e.g. "logreg") to a baseline's validation log loss on the same
    split, drawn as a horizontal dotted line across the top panel: the level a trial must beat.

    Several seeds per scanned lr (more than one scan row at an lr, e.g. with a ``seed`` column):
    the scan is drawn per lr from ``analysis.boundary.per_lr`` instead of per trial: the median
    over the seeds that did not diverge with a min-max bar, on both panels; a cross in the top row
    where any seed diverged, labelled diverged/finished seeds ("2/3"); and instead of ``boundary``
    the band ``divergence_interval`` gives, from the last lr where no seed diverged to the first
    from which every seed did. Refine trials are drawn per trial as above.
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
    per = per_lr(frame)
    seeded = bool(len(per)) and int(per.n_seeds.max()) > 1  # several seeds per scanned lr: draw spreads

    # layout: fixed margins in inches, legends in a column on the right
    width, height = 9.0, 7.0
    left, right, top, bottom, gap = 0.8, 2.7, 0.75, 0.55, 0.2
    fig = Figure(figsize=(width, height), dpi=DPI)
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
        f"{len(frame)} trial{'s' if len(frame) != 1 else ''}: " + ", ".join(f"{counts[k]} {k}" for k in _OUTCOMES if counts[k] or k != "catapult")
        + (f" ({len(per)} scanned lrs × up to {int(per.n_seeds.max())} seeds)" if seeded else ""),
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
    has_result = np.isin(outcome, CONVERGED) | (outcome == "pruned")
    refs = np.array([v for v in (references or {}).values() if v is not None], dtype=np.float64)
    losses = np.concatenate([train_loss[has_result], val_loss[has_result], refs if has_result.any() else []])
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
    scan_ok = np.isin(outcome, CONVERGED) & (phase != "refine")
    refine_ok = np.isin(outcome, CONVERGED) & (phase == "refine")
    pruned = outcome == "pruned"
    order = np.argsort(lr[scan_ok], kind="stable")
    if seeded:
        _seed_spreads(ax_loss, per, (("train_loss", _TRAIN_COLOR, "train loss"), ("val_loss", _VAL_COLOR, "val log loss")))
    for values, color, name in ((train_loss, _TRAIN_COLOR, "train loss"), (val_loss, _VAL_COLOR, "val log loss")):
        if scan_ok.any() and not seeded:
            ax_loss.plot(lr[scan_ok][order], values[scan_ok][order], marker="o", ms=4, lw=1.5, color=color,
                         label=f"{name} (scan)")
        if refine_ok.any():
            ax_loss.plot(lr[refine_ok], values[refine_ok], ls="none", marker="D", ms=5, color=color,
                         markeredgecolor="black", markeredgewidth=0.5, label=f"{name} (refine)")
        if pruned.any():
            ax_loss.plot(lr[pruned], values[pruned], ls="none", marker="v", ms=6, color=color,
                         markerfacecolor="none", label=f"{name} (pruned)")

    for i, (label, value) in enumerate(sorted((references or {}).items())):
        if value is not None and np.isfinite(value) and value > 0:
            ax_loss.axhline(value, ls=":", lw=1.2, color=_REFERENCE_COLORS[i % len(_REFERENCE_COLORS)],
                            label=f"{label} val log loss (baseline)")

    top_row = ax_loss.get_xaxis_transform()  # x in data, y in axes fraction
    diverged = outcome == "diverged"
    marked = diverged & (phase == "refine") if seeded else diverged  # with seeds the scan's are counted per lr
    if seeded:
        _fraction_marks(ax_loss, per, top_row)
    if marked.any():
        ax_loss.plot(lr[marked], np.full(int(marked.sum()), _TOP_ROW), ls="none", marker="x", ms=8, mew=2,
                     color=_DIVERGED_COLOR, transform=top_row, clip_on=False,
                     label="refine trial diverged (at step ...)" if seeded else "diverged (at step ...)")
        for x_value, s in zip(lr[marked], step[marked], strict=True):
            if np.isfinite(s):
                ax_loss.annotate(f"step {int(s)}", xy=(x_value, _TOP_ROW), xycoords=top_row, xytext=(2, -7),
                                 textcoords="offset points", rotation=90, ha="left", va="top", fontsize=7,
                                 color=_DIVERGED_COLOR)
    failed = outcome == "failed"
    if failed.any():
        ax_loss.plot(lr[failed], np.full(int(failed.sum()), _TOP_ROW), ls="none", marker="s", ms=6,
                     color=_FAILED_COLOR, transform=top_row, clip_on=False, label="failed (no result)")

    # --- bottom panel: calibration and discrimination -----------------------------------------
    if seeded:
        _seed_spreads(ax_cal, per, (("ece", _ECE_COLOR, "ECE"), ("auroc", _AUROC_COLOR, "AUROC")))
    elif scan_ok.any():
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
    gone = per.lr[per.frac_diverged == 1].to_numpy() if seeded else lr[diverged]  # lrs with no metrics
    for i, x_value in enumerate(gone):  # where they are, without repeating the top panel's markers
        ax_cal.axvline(x_value, ymin=0.96, ymax=1.0, color=_DIVERGED_COLOR, lw=1.5,
                       label=("every seed diverged (no metrics)" if seeded else "diverged (no metrics)")
                       if i == 0 else None)

    # --- theory and the observed boundary, on both panels -------------------------------------
    if seeded:
        _interval_band((ax_loss, ax_cal), interval_of(per), bool(diverged.any()))
    else:
        _observed_band((ax_loss, ax_cal), boundary)

    note = "plain-GD stability threshold\n(adaptive optimisers, e.g. AdamW,\nhave other thresholds)"
    if thr is None:
        reason = "not estimated" if threshold is None else f"undefined ({threshold!r})"
        ax_loss.plot([], [], ls="none", label=f"2/λ_max: {reason}")
    elif 10**x_lo <= thr <= 10**x_hi:
        for i, ax in enumerate((ax_loss, ax_cal)):
            ax.axvline(thr, color=_THEORY_COLOR, ls="-.", lw=1.3,
                       label=f"2/λ_max = {sig(thr)}\n{note}" if i == 0 else None)
        ax_loss.text(thr, 1.01, "2/λ_max", ha="center", va="bottom", fontsize=8, color=_THEORY_COLOR,
                     transform=top_row)
    else:  # far outside the lrs tried: an arrow at the edge, the value in the legend
        right_side = thr > 10**x_hi
        where = "right" if right_side else "left"
        ax_loss.plot([], [], color=_THEORY_COLOR, ls="-.", lw=1.3,
                     label=f"2/λ_max = {sig(thr)} (off the chart,\n{where}): {note}")
        edge = 0.995 if right_side else 0.005
        ax_loss.annotate(
            f"2/λ_max = {sig(thr)}\n(plain-GD threshold)",
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
        handles, labels = ax.get_legend_handles_labels()
        first = sorted(range(len(labels)), key=lambda j: "median of seeds" not in labels[j])  # errorbars come last
        if labels:
            ax.legend([handles[j] for j in first], [labels[j] for j in first], loc="upper left",
                      bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, framealpha=0.9)
    return fig
