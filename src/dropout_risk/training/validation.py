"""Per-epoch validation as one forward pass over the in-memory validation tensors; its log loss
goes into `trainer.callback_metrics`, where Lightning's EarlyStopping looks for it."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from dropout_risk.model.module import DropoutRiskModule
from dropout_risk.tracking.names import VAL_LOG_LOSS


class EpochValidation(pl.Callback):
    """Validation at the end of every training epoch (also one cut short by the divergence
    guard). Put it first among the callbacks: the recorder and a sweep's pruner read its result
    in the same hook."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: DropoutRiskModule) -> None:
        if self.x.device != pl_module.device:
            self.x, self.y = self.x.to(pl_module.device), self.y.to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        metrics = pl_module.validate_epoch(self.x, self.y)
        pl_module.train(was_training)
        trainer.callback_metrics[VAL_LOG_LOSS] = torch.tensor(metrics[VAL_LOG_LOSS])
