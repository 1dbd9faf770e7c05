"""What a run reports about its trained model, whoever trained it (train(), a population member):
final val/test metrics at the reported epoch, intervals, baselines, temperature scaling,
reliability diagrams, predictions, weights, outcome tags; then the run ends FINISHED."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from dropout_risk.analysis.catapult import catapult
from dropout_risk.analysis.metrics import bayes_metrics
from dropout_risk.data.module import StudentDataModule
from dropout_risk.model.baselines import BASELINE_LABELS, Baseline
from dropout_risk.model.export import log_pyfunc_model
from dropout_risk.model.module import DropoutRiskModule
from dropout_risk.plots.loss import steps_per_epoch
from dropout_risk.tracking.names import (
    MODEL_ARTIFACT,
    PREDICTIONS_ARTIFACT,
    TAG_CATAPULT_STEP,
    TAG_DIVERGED_AT_STEP,
    TAG_OUTCOME,
    TAG_WEIGHTS,
)
from dropout_risk.tracking.provenance import weights_hash
from dropout_risk.tracking.run import Run
from dropout_risk.training.artifacts import log_loss, log_mechanism, log_reliability
from dropout_risk.training.comparison import baseline_metrics, interval_metrics, versus_best_baseline
from dropout_risk.training.evaluate import evaluate, temperature_scaling


@dataclass
class RunResult:
    run_id: str
    run_name: str
    experiment_id: str
    outcome: str  # converged | catapult | diverged | pruned
    diverged_at_step: int | None
    metrics: dict[str, float]  # final val/*, test/*, bayes/*, time/*
    val_history: list[dict[str, float]] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # per step
    grad_norms: list[float] = field(default_factory=list)  # per step, when mechanism.grad_norm
    weights_sha256: str = ""
    baselines: list[str] = field(default_factory=list)  # names, in the order of the config
    verdict: str | None = None  # one line: the MLP minus the best baseline on test, with its interval
    n_students: int = 0  # rows of the data set (all splits)
    catapult_step: int | None = None  # outcome catapult: the step of the loss peak


@dataclass
class Fitted:
    """One trained model and how its training went (module.val_history/val_probs: per epoch)."""

    module: DropoutRiskModule  # its net holds the last weights trained
    outcome: str  # converged | diverged | pruned
    diverged_at_step: int | None
    reason: str
    best_epoch: int | None
    best_state: dict[str, torch.Tensor] | None  # the best epoch's weights (early stopping restores them)
    fit_s: float
    train_loss: list[float]
    grad_norms: list[float] = field(default_factory=list)
    extra_metrics: dict[str, float] = field(default_factory=dict)  # e.g. a population's size and fit time
    stability: object = None  # training.stability.SharpnessSeries, when stability.every_n_steps
    diagrams: object = None  # training.diagrams.EpochDiagrams: per-epoch diagrams drawn during fit


def report_model(cfg, run: Run, dm: StudentDataModule, name: str, resolved: dict, fitted: Fitted,
                 baselines: list[Baseline], first_flow: dict | None = None) -> RunResult:
    """Everything a run logs after fit, from `fitted`; ends the run FINISHED."""
    # With early stopping the run reports its best epoch: everything below is computed from it.
    # A diverged run keeps its diverged state: the divergence chart is about that state.
    module, outcome = fitted.module, fitted.outcome
    diverged = outcome == "diverged"
    # A converged run whose loss rose well above its start and came back is a catapult (it converged).
    jump = (catapult(fitted.train_loss, margin=cfg.stability.catapult_margin)
            if outcome == "converged" and fitted.train_loss and fitted.train_loss[0] > 0 else None)
    if jump is not None:
        outcome = "catapult"
    module.cpu().eval()
    trained = len(module.val_history)
    restore = cfg.trainer.early_stopping.enabled and not diverged and fitted.best_state is not None
    if restore:
        module.net.load_state_dict(fitted.best_state)
    reported = fitted.best_epoch if restore else trained

    metrics: dict[str, float] = {"time/fit_s": fitted.fit_s, "epochs_completed": float(trained),
                                 "stopped_epoch": float(trained), "reported_epoch": float(reported)}
    if fitted.best_epoch is not None:
        metrics["best_epoch"] = float(fitted.best_epoch)
    metrics.update(fitted.extra_metrics)
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
    run.log_metrics(metrics, step=trained)  # sent with the run's end: one batch
    if fitted.stability is not None:
        for step, row in fitted.stability.metrics():
            run.log_metrics(row, step=step)

    t1 = time.perf_counter()
    verdict = (f"diverged at step {fitted.diverged_at_step}" if diverged
               else f"{outcome} · ECE {metrics['val/ece']:.3f}"
               + (f" · best epoch {reported} of {trained}" if reported != trained else ""))
    references = [(BASELINE_LABELS.get(b.name, b.name), b.p["val"]) for b in baselines]
    if cfg.tracking.figures:
        log_reliability(run, cfg, module, dm, name, val_p, f"lr {cfg.optim.lr:.3g} · {verdict}", reported,
                        references, metrics.get("val/smece"), drawn=fitted.diagrams)
        log_loss(run, fitted.train_loss, module.val_history,
                 steps_per_epoch(len(dm.tensors["train"][0]), cfg.data.batch_size),
                 f"{name} · {verdict}", fitted.diverged_at_step if diverged else None)
    log_mechanism(run, cfg, module, dm, name, first_flow)
    run.log_dataset(dm.data.name, dm.fingerprint(), dict(dm.data.features.dtypes.items()))
    # Final predictions, so reports (compare's grid and curves) can redraw without re-running.
    pred = {"val_y": dm.tensors["val"][1].numpy().astype(np.int8), "val_logit": val_logits.astype(np.float32),
            "test_y": dm.tensors["test"][1].numpy().astype(np.int8), "test_logit": test_logits.astype(np.float32)}
    if dm.data.p_true is not None:
        pred.update(val_p_true=dm.p_true("val").astype(np.float32), test_p_true=dm.p_true("test").astype(np.float32))
    # every step's training loss (MLflow gets every tracking.step_metrics_every_n_steps-th)
    pred.update(train_loss=np.asarray(fitted.train_loss, dtype=np.float32))
    if fitted.stability is not None:
        pred.update(fitted.stability.arrays())
    if fitted.grad_norms:
        pred.update(train_grad_norm=np.asarray(fitted.grad_norms, dtype=np.float32))
    for b in baselines:  # so reports can draw the baselines beside the MLP without refitting them
        pred.update({f"{split}_p_baseline_{b.name}": b.p[split].astype(np.float32) for split in ("val", "test")})
    run.log_arrays(PREDICTIONS_ARTIFACT, **pred)
    digest = weights_hash(module.net)
    if cfg.tracking.log_model:
        run.log_torch({"state_dict": module.net.state_dict(), "feature_names": dm.feature_names,
                       "mean": dm.mean, "std": dm.std, "config": resolved}, MODEL_ARTIFACT)
        if cfg.tracking.log_pyfunc and not diverged:  # the MLflow Model: raw columns in, risk out
            log_pyfunc_model(run, module, dm, cfg, metrics.get("temperature"), cfg.tracking.register_as)
    run.set_tags({TAG_OUTCOME: outcome, TAG_WEIGHTS: digest,
                  **({"best_baseline": versus.baseline} if versus else {}),
                  **({TAG_DIVERGED_AT_STEP: str(fitted.diverged_at_step), "diverged_reason": fitted.reason}
                     if diverged else {}),
                  **({TAG_CATAPULT_STEP: str(jump.peak_step)} if jump else {})})
    run.log_metrics({"time/report_s": time.perf_counter() - t1}, step=0)
    run.end("FINISHED")
    return RunResult(
        run_id=run.run_id, run_name=name, experiment_id=run.experiment_id, outcome=outcome,
        diverged_at_step=fitted.diverged_at_step if diverged else None, metrics=metrics,
        val_history=module.val_history, train_loss=fitted.train_loss, grad_norms=fitted.grad_norms,
        weights_sha256=digest, baselines=[b.name for b in baselines], verdict=versus.line() if versus else None,
        n_students=len(dm.data.y), catapult_step=jump.peak_step if jump else None,
    )
