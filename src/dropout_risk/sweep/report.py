"""The sweep's report on its parent run: summary table, sharpness, divergence chart, reliability grid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
import pandas as pd
from omegaconf import DictConfig
from optuna.trial import TrialState

from dropout_risk.sweep.study import effective_trials
from dropout_risk.tracking.names import (
    DIVERGENCE_ARTIFACT,
    DIVERGENCE_IMAGE_KEY,
    GRID_ARTIFACT,
    OUTCOMES,
    RELIABILITY_ARTIFACT,
    SUMMARY_ARTIFACT,
    TAG_BEST_RUN_ID,
    optimizer_name,
)
from dropout_risk.tracking.run import Run

PER_LR_ARTIFACT = "sweep/per_lr.csv"  # analysis.boundary.per_lr of the scan: seeds, divergence fraction, spreads

SUMMARY_COLUMNS = ["trial", "phase", "lr", "seed", "outcome", "diverged_at_step", "train_loss", "val_loss",
                   "auroc", "ece", "brier", "duration_s", "run_id"]


@dataclass
class SweepResult:
    study: str
    parent_run_id: str
    experiment_id: str
    summary: pd.DataFrame
    sharpness: float | None
    gd_threshold: float | None
    boundary: tuple[float | None, float | None]
    best_trial: int | None
    verdict: str | None = None  # the best trial minus the best baseline on test, with its interval


def summary_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per effective trial, columns SUMMARY_COLUMNS; ``seed`` (Int64) is the trial's
    init/data-order seed, <NA> for trials of studies from before seeds per lr."""
    rows = []
    for t in effective_trials(study):
        ua = t.user_attrs
        outcome = ua.get("outcome") or {TrialState.PRUNED: "pruned", TrialState.COMPLETE: "converged"}.get(
            t.state, "failed" if t.state == TrialState.FAIL else t.state.name.lower())
        rows.append({"trial": t.number, "phase": ua.get("phase", "scan"),
                     "lr": t.params.get("lr", ua.get("lr_planned")), "seed": ua.get("seed"), "outcome": outcome,
                     "diverged_at_step": ua.get("diverged_at_step"), "train_loss": ua.get("train_loss"),
                     "val_loss": ua.get("val_loss"), "auroc": ua.get("auroc"), "ece": ua.get("ece"),
                     "brier": ua.get("brier"), "duration_s": ua.get("duration_s"), "run_id": ua.get("run_id")})
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for col in ("lr", "diverged_at_step", "train_loss", "val_loss", "auroc", "ece", "brier", "duration_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    return frame


def sharpness_at_init(cfg: DictConfig) -> float:
    """λ_max of the training-loss Hessian at the initial weights every trial starts from."""
    import torch

    from dropout_risk.analysis.sharpness import sharpness
    from dropout_risk.data.loaders import load_data
    from dropout_risk.data.module import StudentDataModule
    from dropout_risk.model.losses import loss_function
    from dropout_risk.model.mlp import MLP

    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    torch.manual_seed(cfg.seed)  # the same initialisation train() uses
    net = MLP(dm.n_features, list(cfg.model.hidden), cfg.model.activation)
    x, y = dm.tensors["train"]
    return sharpness(net, loss_function(cfg.loss.name), x, y, iters=cfg.sweep.sharpness_iters, seed=cfg.seed)


def report(cfg: DictConfig, study: optuna.Study, run: Run, baselines: list | None = None,
           y: dict | None = None, log=print) -> SweepResult:
    """Divergence chart, reliability grid, summary and per-lr CSVs, and boundary metrics (per trial
    and across seeds) on the parent run; with `baselines` (fitted on the sweep's split, labels `y`),
    the best trial's verdict."""
    from dropout_risk.analysis.boundary import interval_of, observed_boundary, per_lr
    from dropout_risk.analysis.metrics import binary_metrics
    from dropout_risk.analysis.thresholds import gd_threshold
    from dropout_risk.plots.divergence import divergence_chart
    from dropout_risk.plots.png import close, save_tiled_png

    frame = summary_frame(study)
    lam = study.user_attrs.get("sharpness_init")
    threshold = gd_threshold(lam) if lam is not None else None
    scan = frame[frame.phase == "scan"]
    boundary = observed_boundary(frame)
    references = {b.name: float(binary_metrics(y["val"], b.p["val"])["log_loss"]) for b in (baselines or [])} \
        if y is not None else {}
    if cfg.tracking.figures:  # false: the numbers only (sweep/*.csv), as for the trials
        fig = divergence_chart(frame[frame.lr.notna()], threshold, optimizer_name(cfg), boundary, references)
        run.log_image(fig, key=DIVERGENCE_IMAGE_KEY, step=0, also_as=DIVERGENCE_ARTIFACT)
        close(fig)
        diagrams = _scan_diagrams(run, scan)
        if diagrams:  # the trials' own final diagrams side by side: nothing is drawn twice
            run.log_written(GRID_ARTIFACT, lambda path: save_tiled_png(diagrams, 6, path))
    run.log_text(frame.to_csv(index=False), SUMMARY_ARTIFACT)
    per = per_lr(frame)
    run.log_text(per.to_csv(index=False), PER_LR_ARTIFACT)
    from dropout_risk.sweep.atlas import log_atlas

    for line in log_atlas(cfg, run, frame, lam):  # the stability atlas: losses and sharpness against theory
        log(line)

    completed = [t for t in effective_trials(study) if t.state == TrialState.COMPLETE]
    best = min(completed, key=lambda t: t.value) if completed else None
    metrics = {"n_trials": len(frame), **{f"n_{o}": int((frame.outcome == o).sum())
                                          for o in OUTCOMES}}
    if lam is not None:
        metrics.update(sharpness_init=lam, gd_threshold=threshold)
    if boundary[0] is not None:
        metrics["boundary/largest_converged_lr"] = boundary[0]
    if boundary[1] is not None:
        metrics["boundary/smallest_diverged_lr"] = boundary[1]
        if threshold and math.isfinite(threshold):
            metrics["boundary/diverged_lr_over_gd_threshold"] = boundary[1] / threshold
    metrics.update(_seed_metrics(per, interval_of(per)))
    if best is not None:
        metrics.update(best_val_log_loss=best.value, best_lr=best.params["lr"])
        run.set_tags({"best_trial": str(best.number), TAG_BEST_RUN_ID: best.user_attrs.get("run_id", "")})
        if best.user_attrs.get("run_id"):
            run.client.set_tag(best.user_attrs["run_id"], "best", "true")
            if cfg.tracking.log_model:  # trials skip the MLflow Model (~0.2 s each): the best gets it
                from dropout_risk.model.export import log_pyfunc_from_run

                log_pyfunc_from_run(Run(run.client, best.user_attrs["run_id"], claim=False), cfg.tracking.register_as)
    run.log_metrics(metrics, flush=True)
    verdict = None
    if best is not None and best.user_attrs.get("run_id") and y is not None:
        from dropout_risk.sweep.baselines import best_trial_versus_baselines

        verdict = best_trial_versus_baselines(cfg, run, run.client.get_run(best.user_attrs["run_id"]),
                                              baselines or [], y)
    return SweepResult(study.study_name, run.run_id, run.experiment_id, frame, lam, threshold, boundary,
                       best.number if best else None, verdict)


def _seed_metrics(per: pd.DataFrame, interval: tuple[float | None, float | None]) -> dict[str, float]:
    """The boundary across seeds: the interval's ends that exist, seeds per lr, how many lrs are mixed."""
    frac = per.frac_diverged
    out = {"boundary/n_seeds": int(per.n_seeds.max()) if len(per) else 0,
           "boundary/mixed_lrs": int(((frac > 0) & (frac < 1)).sum())}
    for key, value in zip(("boundary/all_converged_lr_max", "boundary/all_diverged_lr_min"), interval, strict=True):
        if value is not None:
            out[key] = value
    return out


def _scan_diagrams(run: Run, scan: pd.DataFrame) -> list:
    """Each scan trial's final reliability diagram, opened lazily (PIL), in lr order: the trial's
    own plots/reliability_val.png, which train() titles with the lr, the outcome and the ECE. A
    trial without one (it failed before drawing it, or tracking.figures=false) is left out."""
    import io

    from PIL import Image

    from dropout_risk.tracking.query import artifact_bytes, runs_by_ids

    ids = [r for r in scan.sort_values("lr").run_id if isinstance(r, str)]
    found = runs_by_ids(run.client, [run.experiment_id], ids)
    diagrams = []
    for run_id in ids:
        if run_id not in found:
            continue
        raw = artifact_bytes(found[run_id].info.artifact_uri, RELIABILITY_ARTIFACT, run.client.tracking_uri)
        if raw is not None:
            diagrams.append(Image.open(io.BytesIO(raw)))
    return diagrams
