"""train(cfg) -> RunResult: the one function every entry point calls.

config check -> data -> DataModule -> MLflow run -> Trainer.fit (divergence guard, per-step
loss, per-epoch validation) -> final val/test metrics -> reliability diagrams -> weights.
"""

from __future__ import annotations

import logging
import signal
import time
import warnings
from dataclasses import dataclass, field

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig

from dropout_risk.analysis import mechanism
from dropout_risk.analysis.metrics import bayes_metrics
from dropout_risk.config.saved import to_container
from dropout_risk.config.validate import validate
from dropout_risk.data.loaders import load_data
from dropout_risk.data.module import StudentDataModule
from dropout_risk.model.baselines import BASELINE_LABELS, Baseline, check_baselines, fit_baselines
from dropout_risk.model.module import DropoutRiskModule
from dropout_risk.model.optim import optimizer_factory
from dropout_risk.tracking.names import (
    MODEL_ARTIFACT,
    PREDICTIONS_ARTIFACT,
    TAG_DIVERGED_AT_STEP,
    TAG_OUTCOME,
    TAG_WEIGHTS,
    run_name,
)
from dropout_risk.tracking.provenance import data_provenance_tags, device_tags, provenance_tags, weights_hash
from dropout_risk.tracking.run import Run
from dropout_risk.tracking.store import check_tracking
from dropout_risk.training.artifacts import log_mechanism, log_reliability, page_student
from dropout_risk.training.best import BestEpoch, early_stopping
from dropout_risk.training.comparison import baseline_metrics, interval_metrics, versus_best_baseline
from dropout_risk.training.evaluate import evaluate, temperature_scaling
from dropout_risk.training.guard import DivergenceGuard
from dropout_risk.training.recorder import StepLossRecorder
from dropout_risk.training.validation import EpochValidation


@dataclass
class RunResult:
    run_id: str
    run_name: str
    experiment_id: str
    outcome: str  # converged | diverged
    diverged_at_step: int | None
    metrics: dict[str, float]  # final val/*, test/*, bayes/*, time/*
    val_history: list[dict[str, float]] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # per step
    grad_norms: list[float] = field(default_factory=list)  # per step, when mechanism.grad_norm
    weights_sha256: str = ""
    baselines: list[str] = field(default_factory=list)  # names, in the order of the config
    verdict: str | None = None  # one line: the MLP minus the best baseline on test, with its interval
    n_students: int = 0  # rows of the data set (all splits)


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # Lightning 2.6 on torch 2.13
    warnings.filterwarnings("ignore", message=".*no `validation_step`. Skipping val loop.*")  # EpochValidation validates


def train(
    cfg: DictConfig,
    *,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    callbacks: list[pl.Callback] | None = None,
    overrides: list[str] | None = None,
) -> RunResult:
    """Train one model as `cfg` says and track it as one MLflow run (nested under
    `parent_run_id` for sweep trials). Bad config or data raises ConfigError/DataError
    before any run is created; anything raised later ends the run FAILED (Ctrl-C: KILLED)."""
    validate(cfg)
    check_tracking(cfg.tracking.uri)
    _quiet_lightning()
    if cfg.trainer.num_threads > 0:
        torch.set_num_threads(cfg.trainer.num_threads)
    data = load_data(cfg.data, cfg.seed)
    dm = StudentDataModule(data, cfg.data, cfg.seed)
    if cfg.mechanism.page:
        page_student(cfg, dm)  # a bad row number fails here, before any run exists
    check_baselines(cfg)
    baselines = fit_baselines(cfg, dm.tensors, cfg.seed)  # one that cannot be fitted fails here too

    name = run_name(cfg)
    resolved = to_container(cfg)
    run_tags = {
        "seed": str(cfg.seed),
        "data": data.name,
        **data_provenance_tags(dm.fingerprint()),
        **device_tags(cfg),
        **provenance_tags(),
        **{k: str(v) for k, v in cfg.tags.items()},
        **(tags or {}),
    }
    run = Run.start(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location, name,
                    tags=run_tags, parent_run_id=parent_run_id)
    with run.failing_on_error({TAG_OUTCOME: "failed"}):
        return _train_in_run(cfg, run, dm, name, resolved, overrides or [], callbacks or [], baselines)


def _train_in_run(cfg, run: Run, dm: StudentDataModule, name: str, resolved: dict,
                  overrides: list[str], callbacks: list[pl.Callback], baselines: list[Baseline]) -> RunResult:
    run.log_config(cfg, overrides)

    torch.manual_seed(cfg.seed)  # initialisation
    module = DropoutRiskModule(
        n_features=dm.n_features,
        hidden=list(cfg.model.hidden),
        activation=cfg.model.activation,
        loss=cfg.loss.name,
        optimizer=optimizer_factory(cfg.optim),
        zero_grad=cfg.optim.zero_grad,
        grad_norm=cfg.mechanism.grad_norm,
        mechanism_every=cfg.mechanism.every_n_steps,
    )
    # The backprop-flow figure compares the network before the first step with the trained one.
    first_flow = (mechanism.flow_profile(mechanism.trace(module.net, module.loss_fn, *dm.tensors["train"]))
                  if cfg.mechanism.figure else None)
    guard = DivergenceGuard(cfg.guard.factor)
    recorder = StepLossRecorder(run)
    best = BestEpoch()
    stopping = cfg.trainer.early_stopping
    stopper = [early_stopping(stopping.patience, stopping.min_delta)] if stopping.enabled else []
    trainer = pl.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        deterministic=cfg.trainer.deterministic,
        # validation first: the others read its result in the same hook
        callbacks=[EpochValidation(*dm.tensors["val"]), *([guard] if cfg.guard.enabled else []), recorder, *callbacks,
                   best, *stopper],
        limit_val_batches=0,  # EpochValidation validates (training/validation.py says why)
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=cfg.trainer.progress_bar,
        num_sanity_val_steps=0,
    )
    sigint = signal.getsignal(signal.SIGINT)
    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm)
    finally:
        fit_s = time.perf_counter() - t0
        run.flush()
        if signal.getsignal(signal.SIGINT) is not sigint and sigint is not None:
            signal.signal(signal.SIGINT, sigint)  # Lightning ignores Ctrl-C after catching one
    if trainer.interrupted:
        raise KeyboardInterrupt
    module.cpu().eval()
    diverged = cfg.guard.enabled and guard.diverged
    # A callback that stopped training for its own reason (a sweep's pruner) names the outcome.
    stopped_by = next((cb.outcome for cb in callbacks if getattr(cb, "outcome", None)), None)
    outcome = "diverged" if diverged else (stopped_by or "converged")
    # With early stopping the run reports its best epoch: everything below is computed from it.
    # A diverged run keeps its diverged state: the divergence chart is about that state.
    trained = len(module.val_history)
    reported = best.best_epoch if stopping.enabled and not diverged and best.restore(module) else trained

    metrics: dict[str, float] = {"time/fit_s": fit_s, "epochs_completed": float(trained),
                                 "stopped_epoch": float(trained), "reported_epoch": float(reported)}
    if best.best_epoch is not None:
        metrics["best_epoch"] = float(best.best_epoch)
    val_m, val_logits, val_p = evaluate(module, *dm.tensors["val"], dm.p_true("val"), "val")
    test_m, test_logits, test_p = evaluate(module, *dm.tensors["test"], dm.p_true("test"), "test")
    metrics.update(val_m)
    metrics.update(test_m)
    # Intervals, and the baselines on the same rows: one split's numbers mean little alone.
    y = {split: dm.tensors[split][1].numpy().astype(np.int64) for split in ("val", "test")}
    metrics.update(interval_metrics(y["test"], test_p, cfg.baselines.n_resamples, cfg.seed))
    metrics.update(baseline_metrics(baselines, y, {split: dm.p_true(split) for split in y}))
    versus, versus_metrics = versus_best_baseline(baselines, y, test_p, cfg.baselines.n_resamples, cfg.seed)
    metrics.update(versus_metrics)
    # The log loss of always predicting the training base rate: below it, the model has learned something.
    base = float(dm.tensors["train"][1].mean())
    for split in ("val", "test"):
        y = dm.tensors[split][1].numpy()
        metrics[f"{split}/log_loss_prior"] = float(-np.mean(y * np.log(base) + (1 - y) * np.log(1 - base)))
    if dm.data.p_true is not None:
        metrics.update({f"bayes/{k}": v for k, v in bayes_metrics(
            dm.tensors["test"][1].numpy().astype(np.int64), dm.p_true("test")).items()})
    if cfg.calibration.method == "temperature" and np.all(np.isfinite(val_logits)):
        metrics.update(temperature_scaling(run, dm, name, val_logits, test_logits, cfg.calibration.figure))
    run.log_metrics(metrics, step=trained, flush=True)

    t1 = time.perf_counter()
    verdict = (f"diverged at step {guard.diverged_at_step}" if diverged
               else f"{outcome} · ECE {metrics['val/ece']:.3f}"
               + (f" · best epoch {reported} of {trained}" if reported != trained else ""))
    references = [(BASELINE_LABELS.get(b.name, b.name), b.p["val"]) for b in baselines]
    log_reliability(run, cfg, module, dm, name, val_p, f"lr {cfg.optim.lr:.3g} · {verdict}", reported,
                    references, metrics.get("val/smece"))
    log_mechanism(run, cfg, module, dm, name, first_flow)
    # Final predictions, so reports (compare's grid and curves) can redraw without re-running.
    pred = {"val_y": dm.tensors["val"][1].numpy().astype(np.int8), "val_logit": val_logits.astype(np.float32),
            "test_y": dm.tensors["test"][1].numpy().astype(np.int8), "test_logit": test_logits.astype(np.float32)}
    if dm.data.p_true is not None:
        pred.update(val_p_true=dm.p_true("val").astype(np.float32), test_p_true=dm.p_true("test").astype(np.float32))
    for b in baselines:  # so reports can draw the baselines beside the MLP without refitting them
        pred.update({f"{split}_p_baseline_{b.name}": b.p[split].astype(np.float32) for split in ("val", "test")})
    run.log_arrays(PREDICTIONS_ARTIFACT, **pred)
    digest = weights_hash(module.net)
    if cfg.tracking.log_model:
        run.log_torch({"state_dict": module.net.state_dict(), "feature_names": dm.feature_names,
                       "mean": dm.mean, "std": dm.std, "config": resolved}, MODEL_ARTIFACT)
    run.set_tags({TAG_OUTCOME: outcome, TAG_WEIGHTS: digest,
                  **({"best_baseline": versus.baseline} if versus else {}),
                  **({TAG_DIVERGED_AT_STEP: str(guard.diverged_at_step), "diverged_reason": guard.reason}
                     if diverged else {})})
    run.log_metrics({"time/report_s": time.perf_counter() - t1}, step=0, flush=True)
    run.end("FINISHED")
    return RunResult(
        run_id=run.run_id, run_name=name, experiment_id=run.experiment_id, outcome=outcome,
        diverged_at_step=guard.diverged_at_step if diverged else None, metrics=metrics,
        val_history=module.val_history, train_loss=recorder.losses, grad_norms=recorder.grad_norms,
        weights_sha256=digest, baselines=[b.name for b in baselines], verdict=versus.line() if versus else None,
        n_students=len(dm.data.y),
    )
