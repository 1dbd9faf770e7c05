"""Early stopping on validation log loss, and the best epoch's weights kept to be restored.

Lightning's `EarlyStopping` decides when to stop; it reads `val/log_loss` from
`trainer.callback_metrics`, where `EpochValidation` puts it. `BestEpoch` keeps an in-memory copy
of the weights of the epoch with the lowest validation log loss (what ModelCheckpoint with
save_top_k=1 would write to disk and read back; for this MLP a copy in memory costs microseconds,
a checkpoint file per improvement milliseconds and a folder to clean up).
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping

from dropout_risk.tracking.names import VAL_LOG_LOSS


class BestEpoch(pl.Callback):
    """After fit: `best_epoch` (1-based; None if no epoch had a finite validation log loss),
    `best_value`, and `state`, that epoch's weights (report_model loads them)."""

    def __init__(self) -> None:
        self.best_epoch: int | None = None
        self.best_value = math.inf
        self.state: dict[str, torch.Tensor] | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if not pl_module.val_history:
            return
        value = pl_module.val_history[-1].get(VAL_LOG_LOSS, math.nan)
        if math.isfinite(value) and value < self.best_value:  # strict: ties keep the earlier epoch
            self.best_value = value
            self.best_epoch = len(pl_module.val_history)
            self.state = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}


def early_stopping(patience: int, min_delta: float) -> EarlyStopping:
    """Lightning's EarlyStopping on val/log_loss, checked at each training epoch's end (our
    validation runs there). NaN is left to the divergence guard (check_finite=False)."""
    return EarlyStopping(monitor=VAL_LOG_LOSS, mode="min", patience=patience, min_delta=min_delta,
                         check_on_train_epoch_end=True, check_finite=False, strict=True, verbose=False)
