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

from dropout_risk.format import sig
from dropout_risk.plots.png import close
from dropout_risk.plots.stability import AtlasRun, atlas_data, stability_atlas
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
    """Draw and log the atlas; returns the printed lines (per lr: late sharpness vs threshold)."""
    runs = atlas_runs(run, frame)
    if not runs:
        return []
    optimizer = optimizer_name(cfg)
    beta1 = float(cfg.optim.betas[0]) if "betas" in cfg.optim else 0.9
    whole, panels = stability_atlas(runs, lam0, optimizer, beta1)
    run.log_image(whole, key="stability", step=0, also_as=STABILITY_ARTIFACT)
    close(whole)
    for name, fig in panels.items():
        run.log_image(fig, key=STABILITY_IMAGE_KEY.format(panel=name), step=0, also_as=f"plots/stability_{name}.png")
        close(fig)
    data = atlas_data(runs, lam0, optimizer, beta1)
    run.log_text(data.to_csv(index=False), STABILITY_CSV)
    measured = data[data.sharpness_median.notna()]
    if measured.empty:
        return []
    kind = "preconditioned sharpness" if data.attrs.get("sharpness") == "preconditioned" else "sharpness"
    lines = [f"late-training {kind} (median, last third) vs the edge-of-stability threshold:"]
    for r in measured.itertuples():
        lines.append(f"  lr {sig(r.lr):>8}  {kind.split()[0]} {sig(r.sharpness_median):>7}  threshold "
                     f"{sig(r.threshold):>7}  ratio {r.sharpness_over_threshold:.2f}")
    run.log_metrics({"stability/n_lrs_at_edge": float(((measured.sharpness_over_threshold - 1).abs() <= 0.2).sum())})
    return lines


def _float(v) -> float:
    return float(v) if v is not None and pd.notna(v) else math.nan


def _int(v) -> int | None:
    try:
        return int(float(v)) if v is not None and pd.notna(v) else None
    except (TypeError, ValueError):
        return None
