"""The per-step training loss and gradient norm, sent to MLflow in bulk."""

from __future__ import annotations

import math
import time

import lightning.pytorch as pl
import numpy as np
import torch

from dropout_risk.tracking.names import TRAIN_LOSS_EPOCH
from dropout_risk.tracking.run import Run


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
        epoch = trainer.current_epoch + 1
        val = pl_module.val_history[epoch - 1] if len(pl_module.val_history) >= epoch else None
        self.run.log_metrics(epoch_metrics(new, val), step=epoch)


def epoch_metrics(step_losses: list[float], val: dict[str, float] | None) -> dict[str, float]:
    """An epoch's train/loss_epoch (mean of its finite step losses) with its validation metrics."""
    finite = [v for v in step_losses if math.isfinite(v)]
    return {TRAIN_LOSS_EPOCH: float(np.mean(finite)) if finite else float("nan"), **(val or {})}


def _floats(values: list[torch.Tensor]) -> list[float]:
    return torch.stack(values).tolist() if values else []
