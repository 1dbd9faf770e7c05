"""The training losses: BCE on the logit, or squared error of the predicted probability."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """bce: BCE on the logit (= log loss); mse: squared error of the predicted probability."""
    if name == "bce":
        return nn.functional.binary_cross_entropy_with_logits
    if name == "mse":
        return lambda logits, y: nn.functional.mse_loss(torch.sigmoid(logits), y)
    raise ValueError(f"loss.name={name!r} is unknown: use loss=bce or loss=mse")


def member_losses(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The same losses per population member: logits and y [K, B] -> each member's mean loss [K]."""
    if name == "bce":
        return lambda logits, y: nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(-1)
    if name == "mse":
        return lambda logits, y: nn.functional.mse_loss(torch.sigmoid(logits), y, reduction="none").mean(-1)
    raise ValueError(f"loss.name={name!r} is unknown: use loss=bce or loss=mse")
