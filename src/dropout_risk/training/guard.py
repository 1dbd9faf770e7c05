"""Divergence as an outcome: the guard that stops training at the step whose loss is non-finite
or too large.

Lightning trains on through NaN losses, and `EarlyStopping(check_finite=True)` only looks at
epoch end, so this callback checks every step's loss.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch


def divergence_reason(value: float, first: float | None, factor: float, step: int) -> str | None:
    """Why a step's loss counts as divergence (non-finite, or > factor x the first step's finite
    loss), or None; the plain guard and a population's per-member guard say it alike."""
    if not math.isfinite(value):
        return f"loss became {value} at step {step}"
    if first is not None and value > factor * max(first, 1e-12):
        return f"loss {value:.4g} > {factor:g} x first loss {first:.4g} at step {step}"
    return None


class DivergenceGuard(pl.Callback):
    """Stop when the loss is non-finite or exceeds `factor` x the first step's loss.

    After fit: `diverged` (bool), `diverged_at_step` (global step, 1-based, of the bad loss)
    and `reason`.
    """

    def __init__(self, factor: float = 10.0) -> None:
        self.factor = factor
        self.first_loss: float | None = None
        self.diverged = False
        self.diverged_at_step: int | None = None
        self.reason = ""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = float(loss) if isinstance(loss, torch.Tensor) else float(loss)
        step = trainer.global_step if trainer.global_step > 0 else batch_idx + 1
        if self.first_loss is None and math.isfinite(value):
            self.first_loss = value
        reason = divergence_reason(value, self.first_loss, self.factor, step)
        if reason is None:
            return
        self.reason = reason
        self.diverged = True
        self.diverged_at_step = step
        trainer.should_stop = True
