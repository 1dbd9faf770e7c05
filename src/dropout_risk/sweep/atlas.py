"""The sweep's stability atlas on its parent run (plots/stability.py): each trial's step losses and
sharpness series are read back from its predictions.npz (every step, which MLflow's metrics thin
out), drawn as plots/stability.png and as one image per panel, and tabulated per lr in
sweep/stability.csv; the lines the sweep prints compare each lr's late-training sharpness with its
edge-of-stability threshold."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from dropout_risk.console import fit
from dropout_risk.format import sig
from dropout_risk.plots.png import close
from dropout_risk.plots.stability import PANELS, AtlasRun, atlas_data, stability_atlas
from dropout_risk.tracking.names import CONVERGED, PREDICTIONS_ARTIFACT, optimizer_name
from dropout_risk.tracking.query import artifact_bytes, runs_by_ids
from dropout_risk.tracking.run import Run

STABILITY_ARTIFACT = "plots/stability.png"
STABILITY_CSV = "sweep/stability.csv"
STABILITY_IMAGE_KEY = "stability/{panel}"  # one image per panel, for MLflow's image views


def atlas_runs(run: Run, frame: pd.DataFrame) -> list[AtlasRun]:
    """One AtlasRun per trial of `frame` (a sweep summary) that has a run, an lr and an outcome
    training gave it (a failed trial has no losses to draw)."""
    rows = frame[frame.lr.notna() & frame.run_id.apply(lambda r: isinstance(r, str))
                 & frame.outcome.isin((*CONVERGED, "diverged", "pruned"))]
    found = runs_by_ids(run.client, [run.experiment_id], list(rows.run_id))
    out = []
    for row in rows.itertuples():
        arrays: dict[str, np.ndarray] = {}
        if row.run_id in found:
            raw = artifact_bytes(found[row.run_id].info.artifact_uri, PREDICTIONS_ARTIFACT, run.client.tracking_uri)
            if raw is not None:
                with np.load(io.BytesIO(raw)) as npz:
                    arrays = {k: npz[k] for k in npz.files if k == "train_loss" or k.startswith("stability_")}
        tags = found[row.run_id].data.tags if row.run_id in found else {}
        out.append(AtlasRun(
            lr=float(row.lr), seed=int(row.seed) if pd.notna(row.seed) else 0, outcome=str(row.outcome),
            final_train_loss=_float(row.train_loss), final_val_loss=_float(row.val_loss),
            step_losses=arrays.get("train_loss", np.empty(0)).astype(np.float64),
            sharpness_steps=arrays.get("stability_steps", np.empty(0)).astype(np.float64),
            sharpness=arrays.get("stability_sharpness", np.empty(0)).astype(np.float64),
            preconditioned=(arrays["stability_preconditioned"].astype(np.float64)
                            if "stability_preconditioned" in arrays else None),
            diverged_at_step=_int(row.diverged_at_step), catapult_step=_int(tags.get("catapult_step"))))
    return out


def log_atlas(cfg: DictConfig, run: Run, frame: pd.DataFrame, lam0: float | None) -> list[str]:
    """Draw and log the atlas; returns the printed lines (per lr: late sharpness vs threshold), each
    at most console.WIDTH columns."""
    runs = atlas_runs(run, frame)
    if not runs:
        return []
    optimizer = optimizer_name(cfg)
    beta1 = float(cfg.optim.betas[0]) if "betas" in cfg.optim else 0.9
    if cfg.tracking.figures:  # false: sweep/stability.csv and the lines only
        whole, panels = stability_atlas(runs, lam0, optimizer, beta1)
        for fig in panels.values():  # not rendered: each panel is cut from the whole atlas (one render, ~1 s less)
            close(fig)
        pixels, columns = _render_columns(whole)
        run.log_pixels(pixels, "stability", 0, STABILITY_ARTIFACT, whole.dpi)
        for name, (top, x0, x1) in columns.items():
            run.log_pixels(np.ascontiguousarray(pixels[top:, x0:x1]), STABILITY_IMAGE_KEY.format(panel=name), 0,
                           f"plots/stability_{name}.png", whole.dpi)
        close(whole)
    data = atlas_data(runs, lam0, optimizer, beta1)
    run.log_text(data.to_csv(index=False), STABILITY_CSV)
    measured = data[data.sharpness_median.notna()]
    if measured.empty:
        return []
    kind = "preconditioned sharpness" if data.attrs.get("sharpness") == "preconditioned" else "sharpness"
    ratio = measured.sharpness_over_threshold
    at_edge = int(((ratio - 1).abs() <= 0.2).sum())
    run.log_metrics({"stability/n_lrs_at_edge": float(at_edge)})
    if len(measured) > 8:  # one line per lr would swamp the console: the range, the rest is in the CSV
        return fit(f"late-training {kind} / edge-of-stability threshold: {ratio.min():.2f}-{ratio.max():.2f} "
                   f"over {len(measured)} lrs, {at_edge} within 20% of it ({STABILITY_CSV}, "
                   f"{STABILITY_ARTIFACT})").split("\n")
    lines = fit(f"late-training {kind} (median, last third) vs the edge-of-stability threshold:").split("\n")
    for r in measured.itertuples():
        lines.append(f"  lr {sig(r.lr):>8}  {kind.split()[0]} {sig(r.sharpness_median):>7}  threshold "
                     f"{sig(r.threshold):>7}  ratio {r.sharpness_over_threshold:.2f}")
    return lines


def _render_columns(fig) -> tuple[np.ndarray, dict[str, tuple[int, int, int]]]:
    """The figure's pixels and, per panel (main axes labelled with a PANELS name), (first row below
    the figure's title, first column, end column): from its left edge (y label included) to the
    next panel's, so its colour bar and legend come along."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    renderer = canvas.get_renderer()
    mains = sorted((ax for ax in fig.axes if ax.get_label() in PANELS), key=lambda ax: ax.get_position().x0)
    lefts = [max(0, int(ax.get_tightbbox(renderer).x0) - 4) for ax in mains] + [pixels.shape[1]]
    title = fig._suptitle  # matplotlib keeps the suptitle here; the panels' own titles stay
    top = max(0, pixels.shape[0] - int(title.get_window_extent(renderer).y0) + 2) if title is not None else 0
    return pixels, {ax.get_label(): (top, lefts[i], lefts[i + 1]) for i, ax in enumerate(mains)}


def _float(v) -> float:
    return float(v) if v is not None and pd.notna(v) else math.nan


def _int(v) -> int | None:
    try:
        return int(float(v)) if v is not None and pd.notna(v) else None
    except (TypeError, ValueError):
        return None
