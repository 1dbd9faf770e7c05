"""The pruning callback of a sweep's refine trials: validation log loss to Optuna each epoch.

A module of its own, imported inside run_trial, so that the sweep's coordinator can create the
study and its parent run before it imports Lightning (local workers start training meanwhile)."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import optuna

from dropout_risk.tracking.names import VAL_LOG_LOSS


class PruneOnValLoss(pl.Callback):
    """Report validation log loss to the trial each epoch; stop when the pruner says so.
    (optuna-integration's callback refuses JournalStorage, our default.)"""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.outcome: str | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if not pl_module.val_history:
            return
        epoch = len(pl_module.val_history)
        value = pl_module.val_history[-1].get(VAL_LOG_LOSS, float("nan"))
        if math.isfinite(value):
            self.trial.report(value, epoch)
            if self.trial.should_prune():
                self.outcome = "pruned"
                trainer.should_stop = True
