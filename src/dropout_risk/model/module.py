"""The LightningModule that trains the MLP (model/mlp.py).

Training uses Lightning's manual optimisation so that the four steps of gradient descent are
written out in `training_step` exactly as a textbook states them: forward, loss, backward,
step (and the `zero_grad` that the classic pitfall forgets).

Validation runs as one forward pass over the in-memory validation tensors at the end of each
training epoch (`EpochValidation`), not through Lightning's evaluation loop: for this model the
loop's machinery cost more than the validation itself (measured, benchmarks/README.md).
"""

from __future__ import annotations

from functools import partial

import lightning.pytorch as pl
import numpy as np
import torch

from dropout_risk.analysis import mechanism
from dropout_risk.analysis.metrics import binary_metrics
from dropout_risk.model.losses import loss_function
from dropout_risk.model.mlp import MLP


class DropoutRiskModule(pl.LightningModule):
    """Forward, loss, backward, step. Per step it keeps the loss, and optionally the gradient
    norm and (every `mechanism_every` steps) the per-layer mechanism metrics; per epoch the
    validation metrics. Everything is kept as tensors during fit and read out per epoch by
    the recorder (no device sync per step beyond the divergence guard's)."""

    def __init__(
        self,
        n_features: int,
        hidden: list[int],
        activation: str,
        loss: str,
        optimizer: partial,
        zero_grad: bool = True,
        grad_norm: bool = True,
        mechanism_every: int = 0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False  # the four steps are spelled out below
        self.net = MLP(n_features, list(hidden), activation)
        self.loss_name = loss
        self.loss_fn = loss_function(loss)
        self.optimizer_factory = optimizer
        self.zero_grad_each_step = zero_grad
        self.track_grad_norm = grad_norm
        self.mechanism_every = mechanism_every
        self.steps_taken = 0
        self.step_losses: list[torch.Tensor] = []
        self.grad_norms: list[torch.Tensor] = []
        self.mechanism_log: list[tuple[int, dict[str, float]]] = []  # (step, mechanism/* values)
        self.val_probs: list[np.ndarray] = []  # one array of validation probabilities per epoch
        self.val_history: list[dict[str, float]] = []
        self.val_y: np.ndarray | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        # The torch optimiser itself: Lightning's wrapper and manual_backward exist for precision
        # plugins and multi-device strategies this project does not configure, and cost 15% of a
        # step of this MLP (measured, benchmarks/README.md). The step is counted below instead.
        opt = self.optimizers(use_pl_optimizer=False)
        if self.zero_grad_each_step:
            opt.zero_grad()  # forget this and gradients add up across steps
        traced = self.mechanism_every > 0 and self.steps_taken % self.mechanism_every == 0
        layers: list | None = [] if traced else None
        logits = self.net(x, record=layers)  # 1. forward
        loss = self.loss_fn(logits, y)  # 2. loss
        loss.backward()  # 3. backward: dL/dθ by the chain rule, added into each θ.grad
        if self.track_grad_norm:  # ||grad|| of all parameters; one cat is 3x cheaper than get_total_norm here
            self.grad_norms.append(torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in self.net.parameters()])))
        if traced:
            tr = mechanism.from_backward(x, layers, [w.weight for w in self.net.layers], loss)
            self.mechanism_log.append((self.steps_taken + 1, mechanism.layer_norms(tr)))
        opt.step()  # 4. step: θ <- θ - lr * (update from θ.grad)
        self._count_step()
        self.step_losses.append(loss.detach())
        return loss.detach()

    def _count_step(self) -> None:
        """What Lightning's optimizer wrapper does around a step: keeps trainer.global_step true."""
        self.steps_taken += 1
        if self._trainer is not None:
            progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
            progress.increment_ready()
            progress.increment_completed()

    @torch.no_grad()
    def validate_epoch(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Loss and metrics of the validation split (one forward pass), appended to val_history."""
        logits = self.net(x)
        loss = float(self.loss_fn(logits, y))
        p = torch.sigmoid(logits.double()).cpu().numpy()
        if self.val_y is None:
            self.val_y = y.cpu().numpy().astype(np.int64)
        metrics = {"val/loss": loss}
        metrics.update({f"val/{k}": v for k, v in binary_metrics(self.val_y, p).items()})
        self.val_probs.append(p)
        self.val_history.append(metrics)
        return metrics
