"""The stability atlas of a learning-rate sweep: three panels that put the runs next to the theory.

(a) final train and validation loss against eta, per lr the median over seeds with a min-max band,
    diverged and catapulting seeds counted per lr, and the plain-GD onset 2/lambda_max(0);
(b) every run's training loss against the step, coloured by eta on a log scale, divergence steps
    (x) and catapult peaks (^, Lewkowycz et al. 2020) marked;
(c) every run's sharpness against the step with its edge-of-stability threshold as a dashed line of
    the same colour: 2/eta for SGD (Cohen et al. 2021); for Adam/AdamW the preconditioned sharpness
    against (2 + 2 beta1)/((1 - beta1) eta), 38/eta at beta1 = 0.9 (Cohen et al. 2022).
``atlas_data``: the same numbers as a table, one row per lr. Figures are built without pyplot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from dropout_risk.analysis.thresholds import adam_threshold, gd_lr_threshold
from dropout_risk.format import sig
from dropout_risk.plots.divergence import _log_limits, _PlainLogFormatter
from dropout_risk.plots.reliability import _DIVERGED_COLOR, _THEORY_COLOR, _TRAIN_COLOR, _VAL_COLOR, DPI

OUTCOMES = ("converged", "diverged", "pruned", "catapult")
PANELS = ("loss_vs_lr", "loss_vs_step", "sharpness_vs_step")
ONSET_LABEL = "plain-GD onset (Lewkowycz et al. 2020; Cohen et al. 2021)"
SGD_EDGE_LABEL = "2/η: edge of stability, Cohen et al. 2021"
_CATAPULT_COLOR = "tab:pink"
_CMAP = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.88, 256)), name="viridis_no_yellow")
_ROWS = {"n_diverged": 0.94, "n_catapult": 0.84}  # axes-fraction heights of the per-lr count rows in (a)
_DATA_TOP = 0.74  # the loss curves of (a) stay below this axes fraction, under those rows
_FAR_DECADES = 1.0  # an onset this close outside the lr range widens the axis of (a)
_LEGEND = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "fontsize": 7.5, "frameon": False}


def _key(lr: float) -> float:
    """One lr per grid point despite float noise: equal to 12 significant digits is the same lr."""
    return float(f"{lr:.12g}")


@dataclass(frozen=True, eq=False)
class AtlasRun:
    """One run of the sweep as the atlas draws it; steps are 1-based (``step_losses[0]`` is step 1).

    ``outcome``: converged, diverged, pruned or catapult (converged after a catapult, analysis.catapult);
    final losses are NaN where there are none (diverged). ``sharpness`` (lambda_max of the training-loss
    Hessian) and ``preconditioned`` (Adam-preconditioned, None if not measured) are at ``sharpness_steps``.
    """

    lr: float
    seed: int
    outcome: str
    final_train_loss: float = math.nan
    final_val_loss: float = math.nan
    step_losses: np.ndarray = field(default_factory=lambda: np.empty(0))
    sharpness_steps: np.ndarray = field(default_factory=lambda: np.empty(0))
    sharpness: np.ndarray = field(default_factory=lambda: np.empty(0))
    preconditioned: np.ndarray | None = None
    diverged_at_step: int | None = None
    catapult_step: int | None = None

    def __post_init__(self) -> None:
        try:
            lr = float(self.lr)
        except (TypeError, ValueError):
            lr = math.nan
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"AtlasRun: lr={self.lr!r} must be a positive number (the atlas's η axes are log)")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"AtlasRun: outcome={self.outcome!r} is unknown: use one of {list(OUTCOMES)}")
        object.__setattr__(self, "lr", lr)
        for name in ("step_losses", "sharpness_steps", "sharpness", "preconditioned"):
            value = getattr(self, name)
            if value is not None or name != "preconditioned":
                object.__setattr__(self, name, np.asarray([] if value is None else value, dtype=np.float64).ravel())
        for name in ("final_train_loss", "final_val_loss"):
            object.__setattr__(self, name, math.nan if getattr(self, name) is None else float(getattr(self, name)))
        for name in ("sharpness", "preconditioned"):
            values = getattr(self, name)
            if values is not None and values.size and values.size != self.sharpness_steps.size:
                raise ValueError(f"AtlasRun: {name} has {values.size} values but sharpness_steps has "
                                 f"{self.sharpness_steps.size}: give one step per measurement")


def is_adaptive(optimizer: str) -> bool:
    """Adam-type optimisers (adam, adamw, ...), whose edge of stability is the preconditioned one."""
    return "adam" in optimizer.lower()


def edge_threshold(lr: float, optimizer: str, beta1: float = 0.9) -> float:
    """The edge-of-stability threshold at ``lr``: 2/lr, or (2 + 2 beta1)/((1 - beta1) lr) for Adam."""
    return adam_threshold(lr, beta1) if is_adaptive(optimizer) else gd_lr_threshold(lr)


def _edge_label(optimizer: str, beta1: float) -> str:
    if not is_adaptive(optimizer):
        return SGD_EDGE_LABEL
    return (f"{sig((2 + 2 * beta1) / (1 - beta1))}/η for β1 = {sig(beta1)}: adaptive edge of stability,\n"
            "Cohen et al. 2022 [(2 + 2β1)/((1 − β1)η)]")


def _onset(lam0: float | None) -> float | None:
    return 2.0 / lam0 if lam0 is not None and math.isfinite(lam0) and lam0 > 0 else None


def _sharpness_series(run: AtlasRun, adaptive: bool) -> tuple[np.ndarray, np.ndarray]:
    """The (steps, values) drawn in panel (c): preconditioned for Adam-type optimisers, finite only."""
    values = run.preconditioned if adaptive else run.sharpness
    if values is None or values.size == 0:
        return np.empty(0), np.empty(0)
    ok = np.isfinite(values) & np.isfinite(run.sharpness_steps)
    return run.sharpness_steps[ok], values[ok]


def _stats(values: list[float]) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return (float(np.median(v)), float(v.min()), float(v.max())) if v.size else (math.nan,) * 3


def atlas_data(runs: list[AtlasRun], lam0: float | None, optimizer: str, beta1: float = 0.9) -> pd.DataFrame:
    """The numbers the atlas draws, one row per lr (increasing; lrs equal to 12 significant digits are one).

    Columns: ``lr``, ``n_seeds``, ``n_diverged``, ``n_catapult``, ``n_pruned``; ``train_loss_`` and
    ``val_loss_`` ``median`` / ``min`` / ``max`` over the seeds that did not diverge (NaN if none);
    ``threshold`` (the edge of stability of panel (c), see ``edge_threshold``); ``sharpness_median``,
    the median of the plotted sharpness (preconditioned for Adam-type optimisers) over the last
    third of each non-diverged run's measurements, pooled over seeds (NaN without data); and
    ``sharpness_over_threshold``. ``attrs``: ``onset`` (2/lam0, NaN when lam0 is not positive),
    ``optimizer``, ``sharpness`` (``preconditioned`` | ``raw``).

    Raises ValueError for an Adam-type optimiser with beta1 outside [0, 1).
    """
    adaptive = is_adaptive(optimizer)
    if adaptive and not 0 <= beta1 < 1:
        raise ValueError(f"atlas_data: beta1={beta1!r} must be in [0, 1) for {optimizer} (Adam's first-moment "
                         "decay), e.g. beta1=0.9")
    groups: dict[float, list[AtlasRun]] = {}
    for run in runs:
        groups.setdefault(_key(run.lr), []).append(run)
    rows = []
    for key in sorted(groups):
        group = groups[key]
        kept = [r for r in group if r.outcome != "diverged"]
        thirds = [_sharpness_series(r, adaptive)[1] for r in kept]
        pooled = [float(x) for v in thirds for x in v[len(v) - math.ceil(len(v) / 3):]]
        row = {"lr": key, "n_seeds": len(group),
               **{f"n_{o}": sum(r.outcome == o for r in group) for o in ("diverged", "catapult", "pruned")}}
        for col in ("train_loss", "val_loss"):
            med, lo, hi = _stats([getattr(r, f"final_{col}") for r in kept])
            row |= {f"{col}_median": med, f"{col}_min": lo, f"{col}_max": hi}
        row["threshold"] = edge_threshold(row["lr"], optimizer, beta1)
        row["sharpness_median"] = _stats(pooled)[0]
        row["sharpness_over_threshold"] = row["sharpness_median"] / row["threshold"]
        rows.append(row)
    spreads = [f"{c}_{s}" for c in ("train_loss", "val_loss") for s in ("median", "min", "max")]
    out = pd.DataFrame(rows, columns=["lr", "n_seeds", "n_diverged", "n_catapult", "n_pruned", *spreads, "threshold",
                                      "sharpness_median", "sharpness_over_threshold"])
    onset = _onset(lam0)
    out.attrs = {"onset": math.nan if onset is None else onset, "optimizer": optimizer,
                 "sharpness": "preconditioned" if adaptive else "raw"}
    return out


@dataclass(frozen=True)
class _Ctx:
    optimizer: str
    beta1: float
    lam0: float | None
    norm: LogNorm
    adaptive: bool

    def color(self, lr: float) -> tuple[float, float, float, float]:
        """A run's colour: its lr on the log colour scale (runs of one lr and their threshold alike)."""
        return tuple(float(c) for c in _CMAP(self.norm(_key(lr))))


class _Plain(_PlainLogFormatter):
    """The divergence chart's plain log labels, also plain from 1,000 to 100,000 (1000, not 1e+03)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        label = super().__call__(x, pos)
        return f"{x:.6g}" if label and 1e3 <= x < 1e5 else label


def _plain_log(axis) -> None:
    """Log-axis tick labels as plain numbers (0.3, 1, 2), minor ones too where they fit."""
    axis.set_major_formatter(_Plain())
    axis.set_minor_formatter(_Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _colorbar(fig: Figure, ax: Axes, ctx: _Ctx) -> None:
    bar = fig.colorbar(ScalarMappable(norm=ctx.norm, cmap=_CMAP), ax=ax, pad=0.02, label="learning rate η")
    _plain_log(bar.ax.yaxis)


def _note(ax: Axes, text: str, keep_x: bool = False) -> None:
    """Say in the axes why it has nothing to draw (no ticks of nothing; ``keep_x`` keeps the x axis)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", color="0.3", fontsize=9, transform=ax.transAxes)
    ax.grid(False)
    ax.tick_params(axis="y" if keep_x else "both", which="both", left=False, labelleft=False, bottom=False,
                   labelbottom=False)


def _loss_vs_lr(fig: Figure, ax: Axes, runs: list[AtlasRun], data: pd.DataFrame, ctx: _Ctx) -> None:
    """Panel (a): final losses per lr over seeds, the diverged and catapult counts, the plain-GD onset."""
    ax.set_title("(a) final loss vs η (over seeds)", fontsize=10)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate η (log scale)")
    ax.set_ylabel("final loss (log scale)")
    ax.grid(alpha=0.3, lw=0.5)
    if data.empty:
        _note(ax, "no runs")
        return
    lr = data.lr.to_numpy(dtype=np.float64)
    x_lo, x_hi = _log_limits(lr, pad=0.06, min_span=1.0)
    onset = _onset(ctx.lam0)
    if onset is not None:
        t = math.log10(onset)
        if x_lo - _FAR_DECADES <= t < x_lo:
            x_lo = t - 0.04 * (x_hi - t)
        elif x_hi < t <= x_hi + _FAR_DECADES:
            x_hi = t + 0.04 * (t - x_lo)
    ax.set_xlim(10**x_lo, 10**x_hi)
    _plain_log(ax.xaxis)
    finals = data[[f"{c}_{s}" for c in ("train_loss", "val_loss") for s in ("min", "max")]].to_numpy(np.float64)
    finals = finals[np.isfinite(finals) & (finals > 0)]
    if finals.size:
        lo, hi = _log_limits(finals, pad=0.0, min_span=0.3)
        span = (hi - lo) / (_DATA_TOP - 0.05)
        ax.set_ylim(10 ** (lo - 0.05 * span), 10 ** (lo - 0.05 * span + span))
        _plain_log(ax.yaxis)
    else:
        ax.set_ylim(0.1, 10.0)
        _note(ax, "every run diverged: no final losses", keep_x=True)
    for col, color, name in (("train_loss", _TRAIN_COLOR, "train loss"), ("val_loss", _VAL_COLOR, "val log loss")):
        med = data[f"{col}_median"].to_numpy(dtype=np.float64)
        if np.isfinite(med).any():
            ax.fill_between(lr, data[f"{col}_min"], data[f"{col}_max"], color=color, alpha=0.2, lw=0)
            ax.plot(lr, med, marker="o", ms=4, lw=1.5, color=color, label=f"{name}: median over seeds (band: min–max)")
    rows = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for column, marker, color, label in (
        ("n_diverged", "x", _DIVERGED_COLOR, "diverged seeds at this η (count k/n)"),
        ("n_catapult", "^", _CATAPULT_COLOR, "catapult seeds: rose, came back (Lewkowycz et al. 2020)"),
    ):
        hit = data[data[column] > 0]
        if len(hit):
            ax.plot(hit.lr, np.full(len(hit), _ROWS[column]), ls="none", marker=marker, ms=7, mew=2 if marker == "x"
                    else 0.8, color=color, mec="black" if marker == "^" else color, transform=rows, clip_on=False,
                    label=label)
        for x_value, k, n in zip(hit.lr, hit[column], hit.n_seeds, strict=True):
            ax.annotate(f"{k}/{n}", xy=(x_value, _ROWS[column]), xycoords=rows, xytext=(0, -7),
                        textcoords="offset points", ha="center", va="top", fontsize=7, color=color)
    reference = f"\nplain-GD reference only: {ctx.optimizer} is adaptive" if ctx.adaptive else ""
    if onset is None:
        why = "not estimated" if ctx.lam0 is None else f"λ_max(0) = {ctx.lam0!r} is not a positive number"
        ax.plot([], [], ls="none", label=f"2/λ_max(0): no onset line ({why})")
    elif 10**x_lo <= onset <= 10**x_hi:
        ax.axvline(onset, color=_THEORY_COLOR, ls="-.", lw=1.3,
                   label=f"2/λ_max(0) = {sig(onset)}: {ONSET_LABEL}{reference}")
    else:
        side = "right" if onset > 10**x_hi else "left"
        ax.plot([], [], color=_THEORY_COLOR, ls="-.", lw=1.3,
                label=f"2/λ_max(0) = {sig(onset)} (off the chart, {side}): {ONSET_LABEL}{reference}")
    ax.legend(**_LEGEND)


def _marks(ax: Axes, runs: list[AtlasRun]) -> None:
    """The divergence steps (x) and catapult peaks (^) on the loss curves of panel (b)."""
    for attr, marker, color, label in (
        ("diverged_at_step", "x", _DIVERGED_COLOR, "x: diverged at this step (guard or NaN)"),
        ("catapult_step", "^", _CATAPULT_COLOR, "^: catapult peak (Lewkowycz et al. 2020)"),
    ):
        points = []
        for run in runs:
            step = getattr(run, attr)
            if step is None or run.step_losses.size == 0:
                continue
            seen = run.step_losses[: min(int(step), run.step_losses.size)]
            seen = seen[np.isfinite(seen) & (seen > 0)]
            if seen.size:  # the loss at that step, or the last finite one before it (a NaN step)
                points.append((int(step), float(seen[-1])))
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, ls="none", marker=marker, ms=8 if marker == "x" else 7, mew=2 if marker == "x" else 0.8,
                    color=color, mec="black" if marker == "^" else color, zorder=3, label=label)


def _loss_vs_step(fig: Figure, ax: Axes, runs: list[AtlasRun], data: pd.DataFrame, ctx: _Ctx) -> None:
    """Panel (b): every run's training loss per step, coloured by eta."""
    ax.set_title("(b) training loss vs step (every run)", fontsize=10)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training loss (log scale)")
    ax.grid(alpha=0.3, lw=0.5)
    drawn = [r for r in sorted(runs, key=lambda r: r.lr) if np.any(np.isfinite(r.step_losses) & (r.step_losses > 0))]
    if not drawn:
        _note(ax, "no per-step training losses recorded")
        return
    ax.set_yscale("log")
    _plain_log(ax.yaxis)
    for run in drawn:
        ax.plot(np.arange(1, run.step_losses.size + 1), run.step_losses, color=ctx.color(run.lr), lw=1.0,
                alpha=0.85, gid=f"loss lr={run.lr:g} seed={run.seed}")
    ax.plot([], [], color="0.4", lw=1.0, label="one line per run, colour = η (colour bar)")
    _marks(ax, drawn)
    _colorbar(fig, ax, ctx)
    ax.legend(**_LEGEND)


def _sharpness_vs_step(fig: Figure, ax: Axes, runs: list[AtlasRun], data: pd.DataFrame, ctx: _Ctx) -> None:
    """Panel (c): every run's (preconditioned) sharpness per step and its dashed threshold, coloured by eta."""
    kind = "preconditioned sharpness λ_max(P⁻¹H)" if ctx.adaptive else "sharpness λ_max(H)"
    ax.set_title(f"(c) {kind} vs step", fontsize=10)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{kind.split(' λ')[0]} (log scale)")
    ax.grid(alpha=0.3, lw=0.5)
    series = [(r, *_sharpness_series(r, ctx.adaptive)) for r in sorted(runs, key=lambda r: r.lr)]
    series = [(r, s, v) for r, s, v in series if np.any(v > 0)]
    if not series:
        what = "preconditioned sharpness" if ctx.adaptive else "sharpness"
        _note(ax, f"no {what} recorded for these runs\n(no data to compare with the edge of stability)")
        return
    ax.set_yscale("log")
    _plain_log(ax.yaxis)
    for run, steps, values in series:
        ax.plot(steps, values, color=ctx.color(run.lr), lw=1.2, alpha=0.9, gid=f"sharpness lr={run.lr:g} seed={run.seed}")
    for lr in sorted({_key(r.lr) for r, _, _ in series}):
        ax.axhline(edge_threshold(lr, ctx.optimizer, ctx.beta1), color=ctx.color(lr), ls="--", lw=1.0,
                   gid=f"threshold lr={lr:g}")
    ax.add_line(Line2D([], [], color="0.4", lw=1.2, label=f"{kind}, one line per run (colour = η)"))
    ax.add_line(Line2D([], [], color="0.4", lw=1.0, ls="--", label=_edge_label(ctx.optimizer, ctx.beta1)))
    _colorbar(fig, ax, ctx)
    ax.legend(**_LEGEND)


_DRAW = dict(zip(PANELS, (_loss_vs_lr, _loss_vs_step, _sharpness_vs_step), strict=True))


def _norm(runs: list[AtlasRun]) -> LogNorm:
    lrs = np.array([r.lr for r in runs], dtype=np.float64)
    if lrs.size == 0 or lrs.min() == lrs.max():  # one lr (or none): a decade around it
        mid = float(lrs[0]) if lrs.size else 1e-2
        return LogNorm(vmin=mid / 10**0.5, vmax=mid * 10**0.5)
    return LogNorm(vmin=float(lrs.min()), vmax=float(lrs.max()))


def _title(fig: Figure, runs: list[AtlasRun], data: pd.DataFrame, optimizer: str, sep: str, fontsize: float) -> None:
    counts = ", ".join(f"{sum(r.outcome == o for r in runs)} {o}" for o in OUTCOMES)
    most = int(data.n_seeds.max()) if len(data) else 0
    seeds = f" ({len(data)} η × up to {most} seed{'s' if most != 1 else ''})" if len(data) else ""
    fig.suptitle(f"Stability atlas, optimizer: {optimizer}{sep}{len(runs)} run{'s' if len(runs) != 1 else ''}: "
                 f"{counts}{seeds}", fontsize=fontsize)


def stability_atlas(
    runs: list[AtlasRun], lam0: float | None, optimizer: str, beta1: float = 0.9
) -> tuple[Figure, dict[str, Figure]]:
    """The stability atlas: (the three panels side by side, 15 x 5 in; each panel as its own figure).

    The dict's keys are ``PANELS``: ``loss_vs_lr`` (a), ``loss_vs_step`` (b), ``sharpness_vs_step``
    (c), each 6 x 5 in, so each can be logged as its own image; the main axes carry these names as
    labels (``ax.get_label()``), the colour bars of (b) and (c) are extra axes labelled
    ``<colorbar>``. ``lam0`` is lambda_max at initialisation: the onset line 2/lam0 is drawn in (a)
    when it is positive and finite, otherwise the legend says why not. The seed bands of (a) are over
    the seeds that did not diverge (pruned ones at the loss they stopped at). For an Adam-type
    ``optimizer`` (the name contains "adam") the onset is labelled a plain-GD reference only and (c)
    draws ``AtlasRun.preconditioned`` against (2 + 2 beta1)/((1 - beta1) eta). In (b) and (c) a
    run's lines carry the gid ``loss|sharpness lr=<lr:g> seed=<seed>`` and the thresholds
    ``threshold lr=<lr:g>``. The numbers drawn are ``atlas_data(runs, lam0, optimizer, beta1)``.
    """
    data = atlas_data(runs, lam0, optimizer, beta1)
    ctx = _Ctx(optimizer, beta1, lam0, _norm(runs), is_adaptive(optimizer))
    # fixed margins, not layout="constrained": its tight-bbox passes over the log axes' ticks
    # cost ~0.5 s per render (measured), more than drawing the lines
    whole = Figure(figsize=(15.0, 5.0), dpi=DPI)
    whole.subplots_adjust(left=0.045, right=0.955, bottom=0.31, top=0.87, wspace=0.34)
    _title(whole, runs, data, optimizer, " — ", 11)
    panels = {}
    for ax, key in zip(whole.subplots(1, 3), PANELS, strict=True):
        ax.set_label(key)
        _DRAW[key](whole, ax, runs, data, ctx)
        fig = Figure(figsize=(6.0, 5.0), dpi=DPI)
        fig.subplots_adjust(left=0.14, right=0.9, bottom=0.31, top=0.84)
        _title(fig, runs, data, optimizer, "\n", 9)
        own = fig.add_subplot(label=key)
        _DRAW[key](fig, own, runs, data, ctx)
        panels[key] = fig
    return whole, panels
