"""The MLP and its LightningModule.

h_0 = x,  h_l = act(W_l h_{l-1} + b_l) for each hidden layer,  logit = W_out h_L + b_out.

Training uses Lightning's manual optimisation so that the four steps of gradient descent are
written out in `training_step` exactly as a textbook states them: forward, loss, backward,
step (and the `zero_grad` that the classic pitfall forgets).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dropout_risk.config import ACTIVATION_NAMES, check_targets
from dropout_risk.metrics import binary_metrics

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES

# Keys of the optim config that are ours, not the optimiser's.
_NOT_OPTIMIZER_ARGS = ("zero_grad", "scan_range")


class MLP(nn.Module):
    def __init__(self, n_features: int, hidden: list[int], activation: str = "relu") -> None:
        super().__init__()
        widths = [n_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.act = ACTIVATIONS[activation]()
        self.out = nn.Linear(widths[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.out(h).squeeze(-1)


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """bce: BCE on the logit (= log loss); mse: squared error of the predicted probability."""
    if name == "bce":
        return nn.functional.binary_cross_entropy_with_logits
    if name == "mse":
        return lambda logits, y: nn.functional.mse_loss(torch.sigmoid(logits), y)
    raise ValueError(f"loss.name={name!r} is unknown: use loss=bce or loss=mse")


def optimizer_factory(optim_cfg: DictConfig) -> partial:
    """The `_partial_` optimiser from config (allow-listed target), minus our own keys."""
    check_targets(optim_cfg, "optim")
    args = OmegaConf.to_container(optim_cfg, resolve=True)
    for key in _NOT_OPTIMIZER_ARGS:
        args.pop(key, None)
    args["_partial_"] = True
    return instantiate(args)


class DropoutRiskModule(pl.LightningModule):
    """Forward, loss, backward, step; validation metrics each epoch."""

    def __init__(
        self,
        n_features: int,
        hidden: list[int],
        activation: str,
        loss: str,
        optimizer: partial,
        zero_grad: bool = True,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False  # the four steps are spelled out below
        self.net = MLP(n_features, list(hidden), activation)
        self.loss_name = loss
        self.loss_fn = loss_function(loss)
        self.optimizer_factory = optimizer
        self.zero_grad_each_step = zero_grad
        self.val_probs: list[np.ndarray] = []  # one array of validation probabilities per epoch
        self.val_history: list[dict[str, float]] = []
        self._val_logits: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []
        self.val_y: np.ndarray | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        opt = self.optimizers()
        if self.zero_grad_each_step:
            opt.zero_grad()  # forget this and gradients add up across steps
        logits = self(x)  # 1. forward
        loss = self.loss_fn(logits, y)  # 2. loss
        self.manual_backward(loss)  # 3. backward: dL/dθ by the chain rule
        opt.step()  # 4. step: θ <- θ - lr * (update from dL/dθ)
        return loss.detach()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._val_logits.append(self(x).detach())
        self._val_targets.append(y)

    def on_validation_epoch_end(self) -> None:
        logits = torch.cat(self._val_logits)
        y = torch.cat(self._val_targets)
        self._val_logits.clear()
        self._val_targets.clear()
        if self.trainer.sanity_checking:
            return
        loss = float(self.loss_fn(logits, y))
        p = torch.sigmoid(logits.double()).cpu().numpy()
        self.val_y = y.cpu().numpy().astype(np.int64)
        metrics = {"val/loss": loss}
        metrics.update({f"val/{k}": v for k, v in binary_metrics(self.val_y, p).items()})
        self.val_probs.append(p)
        self.val_history.append(metrics)
        # The headline ones into callback_metrics, where early-stopping / checkpoint callbacks look
        # (each self.log call has a cost; the full set is in val_history and MLflow).
        self.log_dict({k: float(metrics[k]) for k in ("val/loss", "val/log_loss", "val/auroc", "val/ece")},
                      logger=False)
