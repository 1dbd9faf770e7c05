"""train(cfg) -> RunResult: the one function every entry point calls.

config check -> data -> DataModule -> MLflow run -> Trainer.fit (divergence guard, per-step
loss, per-epoch validation) -> final val/test metrics -> reliability diagrams -> weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import signal
import time
import warnings
from dataclasses import dataclass, field

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dropout_risk import mechanism, plots
from dropout_risk.calibration import apply_temperature, fit_temperature
from dropout_risk.config import saved_config_yaml, to_container, validate
from dropout_risk.data.loaders import load_data
from dropout_risk.data.module import StudentDataModule
from dropout_risk.divergence import DivergenceGuard
from dropout_risk.errors import ConfigError
from dropout_risk.mechanism_page import render_page
from dropout_risk.metrics import bayes_metrics, binary_metrics, truth_metrics
from dropout_risk.model import DropoutRiskModule, EpochValidation, optimizer_factory
from dropout_risk.tracking import Run, check_tracking, flatten, provenance_tags

log = logging.getLogger(__name__)


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


class StepLossRecorder(pl.Callback):
    """Per-step training loss (and gradient norm, and mechanism metrics where traced) and
    per-epoch validation metrics, read from the module once per epoch and sent to MLflow in
    batches: at most every `flush_every_s` seconds during fit (so a long run shows progress in
    the UI) and at the end. A request per step, or even per epoch, costs more than training
    this MLP."""

    def __init__(self, run: Run, flush_every_s: float = 10.0) -> None:
        self.run = run
        self.flush_every_s = flush_every_s
        self.losses: list[float] = []
        self.grad_norms: list[float] = []
        self._mechanism_done = 0
        self._last_flush = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._record_epoch(trainer, pl_module)
        if time.monotonic() - self._last_flush > self.flush_every_s:
            self.run.flush()
            self._last_flush = time.monotonic()

    def on_fit_end(self, trainer, pl_module) -> None:  # a diverged epoch may end early
        self._record_epoch(trainer, pl_module)  # train() flushes after fit

    def _record_epoch(self, trainer, pl_module) -> None:
        first = len(self.losses)
        new = _floats(pl_module.step_losses[first:])
        if not new:
            return
        self.losses.extend(new)
        self.run.log_metric_series("train/loss", new, first_step=first + 1, flush=False)
        grads = _floats(pl_module.grad_norms[len(self.grad_norms):])
        if grads:
            self.run.log_metric_series("train/grad_norm", grads, first_step=len(self.grad_norms) + 1, flush=False)
            self.grad_norms.extend(grads)
        for step, values in pl_module.mechanism_log[self._mechanism_done:]:
            self.run.log_metrics(values, step=step)
        self._mechanism_done = len(pl_module.mechanism_log)
        finite = [v for v in new if math.isfinite(v)]
        metrics = {"train/loss_epoch": float(np.mean(finite)) if finite else float("nan")}
        epoch = trainer.current_epoch + 1
        if len(pl_module.val_history) >= epoch:
            metrics.update(pl_module.val_history[epoch - 1])
        self.run.log_metrics(metrics, step=epoch)


def _floats(values: list[torch.Tensor]) -> list[float]:
    return torch.stack(values).tolist() if values else []


def run_name(cfg: DictConfig) -> str:
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    optim = str(cfg.optim._target_).rsplit(".", 1)[-1].lower()
    hidden = "x".join(str(h) for h in cfg.model.hidden)
    return f"{optim}-lr{cfg.optim.lr:.3g}-h{hidden}-s{cfg.seed}"


def evaluate(module: DropoutRiskModule, x: torch.Tensor, y: torch.Tensor, p_true: np.ndarray | None, prefix: str):
    """Loss and every metric of one split; against p_true too where it is known."""
    with torch.no_grad():
        logits = module(x.to(module.device)).cpu()
    loss = float(module.loss_fn(logits, y))
    p = torch.sigmoid(logits.double()).numpy()
    yy = y.numpy().astype(np.int64)
    out = {f"{prefix}/loss": loss}
    out.update({f"{prefix}/{k}": v for k, v in binary_metrics(yy, p).items()})
    if p_true is not None:
        out.update({f"{prefix}/{k}": v for k, v in truth_metrics(yy, p, p_true).items()})
    return out, logits.numpy(), p


def data_provenance_tags(fingerprint: dict) -> dict[str, str]:
    """`data_fingerprint` (JSON: sha256 of the file bytes, or generator version + parameters,
    plus the split) and its parts as separate tags, searchable in the UI."""
    tags = {"data_fingerprint": json.dumps(fingerprint, sort_keys=True, default=str),
            "split_fingerprint": str(fingerprint.get("split", ""))}
    if "sha256" in fingerprint:
        tags["data_sha256"] = str(fingerprint["sha256"])
    if "generator" in fingerprint:
        tags["data_generator"] = str(fingerprint["generator"])
    return tags


def device_tags(cfg: DictConfig) -> dict[str, str]:
    """Where the numbers were computed: results are bit-identical only on the same kind of device
    (and, for matrix products that split their sums, the same thread count)."""
    device = "cpu"
    if cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.get_device_name(0)}"
    return {"device": device, "torch_threads": str(torch.get_num_threads())}


def weights_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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
    try:
        return _train_in_run(cfg, run, dm, name, resolved, overrides or [], callbacks or [])
    except (KeyboardInterrupt, SystemExit) as exc:
        run.set_tags({"outcome": "failed", "error": f"interrupted ({type(exc).__name__})"})
        run.end("KILLED")
        raise
    except BaseException as exc:
        run.set_tags({"outcome": "failed", "error": f"{type(exc).__name__}: {exc}"[:5000]})
        run.end("FAILED")
        raise


def _train_in_run(cfg, run: Run, dm: StudentDataModule, name: str, resolved: dict,
                  overrides: list[str], callbacks: list[pl.Callback]) -> RunResult:
    run.log_params(flatten(resolved))
    run.log_text(saved_config_yaml(cfg), "config/config.yaml")
    run.log_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))), "config/overrides.yaml")

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
    trainer = pl.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        deterministic=cfg.trainer.deterministic,
        callbacks=[EpochValidation(*dm.tensors["val"]), *([guard] if cfg.guard.enabled else []), recorder, *callbacks],
        limit_val_batches=0,  # EpochValidation validates (model.py says why)
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

    metrics: dict[str, float] = {"time/fit_s": fit_s, "epochs_completed": float(len(module.val_history))}
    val_m, val_logits, val_p = evaluate(module, *dm.tensors["val"], dm.p_true("val"), "val")
    test_m, test_logits, _ = evaluate(module, *dm.tensors["test"], dm.p_true("test"), "test")
    metrics.update(val_m)
    metrics.update(test_m)
    # The log loss of always predicting the training base rate: below it, the model has learned something.
    base = float(dm.tensors["train"][1].mean())
    for split in ("val", "test"):
        y = dm.tensors[split][1].numpy()
        metrics[f"{split}/log_loss_prior"] = float(-np.mean(y * np.log(base) + (1 - y) * np.log(1 - base)))
    if dm.data.p_true is not None:
        metrics.update({f"bayes/{k}": v for k, v in bayes_metrics(
            dm.tensors["test"][1].numpy().astype(np.int64), dm.p_true("test")).items()})
    if cfg.calibration.method == "temperature" and np.all(np.isfinite(val_logits)):
        metrics.update(_temperature_scaling(run, dm, name, val_logits, test_logits, cfg.calibration.figure))
    run.log_metrics(metrics, step=len(module.val_history), flush=True)

    t1 = time.perf_counter()
    verdict = (f"diverged at step {guard.diverged_at_step}" if diverged
               else f"{outcome} · ECE {metrics['val/ece']:.3f}")
    _log_reliability(run, cfg, module, dm, name, val_p, f"lr {cfg.optim.lr:.3g} · {verdict}")
    _log_mechanism(run, cfg, module, dm, name, first_flow)
    # Final predictions, so reports (compare's grid and curves) can redraw without re-running.
    pred = {"val_y": dm.tensors["val"][1].numpy().astype(np.int8), "val_logit": val_logits.astype(np.float32),
            "test_y": dm.tensors["test"][1].numpy().astype(np.int8), "test_logit": test_logits.astype(np.float32)}
    if dm.data.p_true is not None:
        pred.update(val_p_true=dm.p_true("val").astype(np.float32), test_p_true=dm.p_true("test").astype(np.float32))
    run.log_arrays("predictions/predictions.npz", **pred)
    digest = weights_hash(module.net)
    if cfg.tracking.log_model:
        run.log_torch({"state_dict": module.net.state_dict(), "feature_names": dm.feature_names,
                       "mean": dm.mean, "std": dm.std, "config": resolved}, "model/model.pt")
    run.set_tags({"outcome": outcome, "weights_sha256": digest,
                  **({"diverged_at_step": str(guard.diverged_at_step), "diverged_reason": guard.reason}
                     if diverged else {})})
    run.log_metrics({"time/report_s": time.perf_counter() - t1}, step=0, flush=True)
    run.end("FINISHED")
    return RunResult(
        run_id=run.run_id, run_name=name, experiment_id=run.experiment_id, outcome=outcome,
        diverged_at_step=guard.diverged_at_step if diverged else None, metrics=metrics,
        val_history=module.val_history, train_loss=recorder.losses, grad_norms=recorder.grad_norms,
        weights_sha256=digest,
    )


CALIBRATED = ("log_loss", "brier", "ece", "ece_adaptive", "mce", "ece_true", "excess_log_loss")


def _temperature_scaling(run: Run, dm: StudentDataModule, name: str, val_logits: np.ndarray,
                         test_logits: np.ndarray, figure: bool = True) -> dict[str, float]:
    """Fit T on validation logits only; report calibrated val and test metrics and draw the
    reliability diagram before and after side by side."""
    val_y = dm.tensors["val"][1].numpy().astype(np.int64)
    test_y = dm.tensors["test"][1].numpy().astype(np.int64)
    t = fit_temperature(val_logits, val_y)
    out = {"temperature": t}
    for split, logits, y in (("val", val_logits, val_y), ("test", test_logits, test_y)):
        p = apply_temperature(logits, t)
        m = binary_metrics(y, p)
        if dm.p_true(split) is not None:
            m.update(truth_metrics(y, p, dm.p_true(split)))
        out.update({f"{split}/{k}_calibrated": v for k, v in m.items() if k in CALIBRATED})
    if not figure:
        return out
    fig = plots.reliability_pair(val_y, apply_temperature(val_logits, 1.0), apply_temperature(val_logits, t),
                                 titles=(f"{name} · val, before", f"after temperature scaling (T = {t:.3g})"))
    run.log_figure(fig, "plots/reliability_calibration.png")
    plots.close(fig)
    return out


def _log_reliability(run: Run, cfg, module: DropoutRiskModule, dm: StudentDataModule, name: str,
                     final_p: np.ndarray, verdict: str) -> None:
    """Per-epoch diagrams into the UI's image grid (key reliability/val), drawn after fit from
    the stored validation probabilities so plotting never slows training; the final one as
    plots/reliability_val.png, titled with `verdict` too (lr, outcome, ECE: a sweep's
    reliability grid is these images side by side)."""
    y = dm.tensors["val"][1].numpy().astype(np.int64)
    every = cfg.tracking.reliability_every_n_epochs
    n = len(module.val_probs)
    for epoch in range(1, n + 1):
        if epoch % every and epoch != n:
            continue
        # the last epoch's model is the final one: its diagram is also plots/reliability_val.png
        final = epoch == n and np.array_equal(module.val_probs[-1], final_p, equal_nan=True)
        title = f"{name} · epoch {epoch}" + (f"\n{verdict}" if final else "")
        fig = plots.reliability_diagram(y, module.val_probs[epoch - 1], title=title)
        run.log_image(fig, key="reliability/val", step=epoch, also_as="plots/reliability_val.png" if final else None)
        if final:
            final_p = None
        plots.close(fig)
    if final_p is not None:  # training stopped mid-epoch (divergence): draw the final model too
        fig = plots.reliability_diagram(y, final_p, title=f"{name} · final (val)\n{verdict}")
        run.log_figure(fig, "plots/reliability_val.png")
        plots.close(fig)


def page_student(cfg, dm: StudentDataModule) -> int:
    """The validation row the lab page follows (ConfigError when out of range)."""
    y = dm.tensors["val"][1]
    student = cfg.mechanism.student
    if student is None:
        positives = torch.nonzero(y == 1).flatten()
        return int(positives[0]) if len(positives) else 0
    if not 0 <= student < len(y):
        raise ConfigError(f"mechanism.student={student} is outside the validation split (0..{len(y) - 1}): "
                          "pass a row number in that range or mechanism.student=null")
    return student


def _log_mechanism(run: Run, cfg, module: DropoutRiskModule, dm: StudentDataModule, name: str,
                   first_flow: dict[str, np.ndarray] | None) -> None:
    """plots/backprop_flow.png (training set, before the first step and after the last) and the
    mechanism lab page for one validation student (mechanism/index.html)."""
    x_train, y_train = dm.tensors["train"]
    if first_flow is not None:
        last_flow = mechanism.flow_profile(mechanism.trace(module.net, module.loss_fn, x_train, y_train))
        fig = plots.backprop_flow(first_flow, last_flow, mechanism.layer_names(len(module.net.hidden)),
                                  ("before step 1", f"after step {module.steps_taken} (end)"),
                                  f"{name} · backprop flow on the training set")
        run.log_figure(fig, "plots/backprop_flow.png")
        plots.close(fig)
    if not cfg.mechanism.page:
        return
    x, y = dm.tensors["val"]
    student = page_student(cfg, dm)
    raw = dm.data.features.iloc[dm.splits["val"][student]][dm.feature_names].to_numpy(dtype=np.float64)
    data = mechanism.page_data(
        module.net, module.loss_fn, cfg.loss.name, x, y, raw, dm.feature_names,
        student, float(cfg.optim.lr), str(cfg.optim._target_).rsplit(".", 1)[-1], cfg.model.activation, name,
        run.run_id)
    numbers = [data["loss"], *data["grad_norms"], *data["weight_norms"]]
    if all(math.isfinite(v) for v in numbers):
        run.log_text(render_page(data), "mechanism/index.html")
    else:  # a diverged network has no meaningful forward pass to show
        run.set_tags({"mechanism_page": "not drawn: the trained network's numbers are not finite"})
