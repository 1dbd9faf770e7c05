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

    def __init__(self, run: Run, flush_every_s: float = 10.0, every_n_steps: int = 1) -> None:
        self.run = run
        self.every = every_n_steps  # per-step series: step 1, every n-th and the last step only
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
        if not self._record_epoch(trainer, pl_module, last=True) and self.losses:
            # the series ended with an epoch recorded before: its last step, unless already logged
            step = len(self.losses)
            if self.every > 1 and step != 1 and step % self.every:
                self.run.log_metrics({"train/loss": self.losses[-1]}, step=step)
                if len(self.grad_norms) == step:
                    self.run.log_metrics({"train/grad_norm": self.grad_norms[-1]}, step=step)

    def _record_epoch(self, trainer, pl_module, last: bool = False) -> bool:
        """Log the steps since the last call and the epoch's metrics; False when there were none."""
        first = len(self.losses)
        new = _floats(pl_module.step_losses[first:])
        if not new:
            return False
        self.losses.extend(new)
        series = {"flush": False, "every": self.every, "last": last}
        self.run.log_metric_series("train/loss", new, first_step=first + 1, **series)
        grads = _floats(pl_module.grad_norms[len(self.grad_norms):])
        if grads:
            self.run.log_metric_series("train/grad_norm", grads, first_step=len(self.grad_norms) + 1, **series)
            self.grad_norms.extend(grads)
        for step, values in pl_module.mechanism_log[self._mechanism_done:]:
            self.run.log_metrics(values, step=step)
        self._mechanism_done = len(pl_module.mechanism_log)
        epoch = trainer.current_epoch + 1
        val = pl_module.val_history[epoch - 1] if len(pl_module.val_history) >= epoch else None
        self.run.log_metrics(epoch_metrics(new, val), step=epoch)
        return True


def epoch_metrics(step_losses: list[float], val: dict[str, float] | None) -> dict[str, float]:
    """An epoch's train/loss_epoch (mean of its finite step losses) with its validation metrics."""
    finite = [v for v in step_losses if math.isfinite(v)]
    return {TRAIN_LOSS_EPOCH: float(np.mean(finite)) if finite else float("nan"), **(val or {})}


def _floats(values: list[torch.Tensor]) -> list[float]:
    return torch.stack(values).tolist() if values else []
