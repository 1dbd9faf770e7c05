"""Sharpness during training (stability.every_n_steps): lambda_max of the training-loss Hessian on
a fixed evaluation batch, every N steps, warm-started from the previous eigenvector
(analysis/sharpness.py); for Adam/AdamW also the preconditioned sharpness lambda_max(P^-1 H) from
the optimiser's own second moments; and the threshold each is held to:

- plain gradient descent is unstable once the sharpness exceeds 2/lr, and in practice trains with
  the sharpness hovering at 2/lr: the edge of stability (Cohen et al. 2021); with heavy-ball
  momentum beta the threshold is (2 + 2 beta)/lr (ibid., appendix);
- Adam's preconditioned sharpness hovers at (2 + 2 beta1)/((1 - beta1) lr), 38/lr for beta1 = 0.9
  (Cohen et al. 2022, "Adaptive Gradient Methods at the Edge of Stability").

Metrics: stability/sharpness, stability/preconditioned_sharpness (Adam/AdamW), stability/threshold,
at the steps they were measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import lightning.pytorch as pl
import numpy as np
import torch

from dropout_risk.analysis.sharpness import member_sharpness, top_eigen
from dropout_risk.analysis.thresholds import adam_threshold, gd_lr_threshold

ADAPTIVE = ("Adam", "AdamW")
SHARPNESS, PRECONDITIONED, THRESHOLD = "stability/sharpness", "stability/preconditioned_sharpness", "stability/threshold"


def threshold(optimizer: torch.optim.Optimizer, lr: float) -> float:
    """The sharpness (for Adam/AdamW: the preconditioned sharpness) above which `optimizer` at
    step size `lr` is unstable on a quadratic, and where training hovers at the edge of stability."""
    group = optimizer.param_groups[0]
    if type(optimizer).__name__ in ADAPTIVE:
        return adam_threshold(lr, group["betas"][0])
    momentum = float(group.get("momentum", 0.0) or 0.0)
    return (1.0 + momentum) * gd_lr_threshold(lr)


def is_adaptive(optimizer: torch.optim.Optimizer) -> bool:
    return type(optimizer).__name__ in ADAPTIVE


@dataclass
class SharpnessSeries:
    """One model's estimates: the steps, lambda_max and (Adam/AdamW) lambda_max(P^-1 H) there."""

    steps: list[int] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)
    preconditioned: list[float] = field(default_factory=list)  # empty unless adaptive
    threshold: float = math.nan

    def metrics(self) -> list[tuple[int, dict[str, float]]]:
        """(step, metrics) for MLflow; non-finite estimates are left out (MLflow stores no NaN well)."""
        out = []
        for i, step in enumerate(self.steps):
            row = {SHARPNESS: self.sharpness[i], THRESHOLD: self.threshold}
            if self.preconditioned:
                row[PRECONDITIONED] = self.preconditioned[i]
            out.append((step, {k: v for k, v in row.items() if math.isfinite(v)}))
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """For predictions.npz: what the sweep's stability atlas reads back."""
        if not self.steps:
            return {}
        out = {"stability_steps": np.asarray(self.steps, dtype=np.int32),
               "stability_sharpness": np.asarray(self.sharpness, dtype=np.float32),
               "stability_threshold": np.asarray([self.threshold], dtype=np.float32)}
        if self.preconditioned:
            out["stability_preconditioned"] = np.asarray(self.preconditioned, dtype=np.float32)
        return out


def eval_batch(x: torch.Tensor, y: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed evaluation batch: the first `rows` training rows (the split is already shuffled)."""
    return x[:rows], y[:rows]


class SharpnessMonitor(pl.Callback):
    """Every `every` steps of a DropoutRiskModule: its sharpness (and preconditioned sharpness)
    on (x, y), the first estimate with `iters` Hessian-vector products, later ones with
    `iters_per_estimate` from the previous eigenvector (one HVP costs about two training steps)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, every: int, iters: int, iters_per_estimate: int,
                 lr: float) -> None:
        self.x, self.y, self.every, self.iters, self.iters_per = x, y, every, iters, iters_per_estimate
        self.lr = lr
        self.series = SharpnessSeries()
        self._v: torch.Tensor | None = None
        self._vp: torch.Tensor | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.steps_taken
        if step % self.every:
            return
        opt = pl_module.optimizers(use_pl_optimizer=False)
        x, y = self.x.to(pl_module.device), self.y.to(pl_module.device)
        s = self.series
        if not s.steps:
            s.threshold = threshold(opt, self.lr)
        iters = self.iters if self._v is None else self.iters_per
        lam, self._v = top_eigen(pl_module.net, pl_module.loss_fn, x, y, v0=self._v, iters=iters)
        s.steps.append(step)
        s.sharpness.append(lam)
        if is_adaptive(opt) and opt.state:
            iters = self.iters if self._vp is None else self.iters_per
            pre, self._vp = top_eigen(pl_module.net, pl_module.loss_fn, x, y, v0=self._vp, iters=iters, optimizer=opt)
            s.preconditioned.append(pre)


class MemberSharpness:
    """The same for every live row of a PopulationModule at once (block-diagonal Hessian:
    analysis.sharpness.member_sharpness), kept per member."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, every: int, iters: int, iters_per_estimate: int,
                 lrs: list[float]) -> None:
        self.x, self.y, self.every, self.iters, self.iters_per = x, y, every, iters, iters_per_estimate
        self.series = [SharpnessSeries() for _ in lrs]
        self.lrs = lrs
        self._v: torch.Tensor | None = None
        self._vp: torch.Tensor | None = None

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def estimate(self, module, rows: list[int], live: torch.Tensor) -> None:
        """Estimates for `rows` (member index of each stacked row) of module.net; members not live
        (frozen this epoch) get none."""
        opt = module.optimizers(use_pl_optimizer=False)
        x, y = self.x.to(module.device), self.y.to(module.device)
        iters = self.iters if self._v is None else self.iters_per
        lams, self._v = member_sharpness(module.net, module.loss_fn, x, y, v0=self._v, iters=iters)
        pre = None
        if is_adaptive(opt) and opt.state:
            iters = self.iters if self._vp is None else self.iters_per
            pre, self._vp = member_sharpness(module.net, module.loss_fn, x, y, v0=self._vp, iters=iters, optimizer=opt)
        step = module.steps_taken
        for r, k in enumerate(rows):
            if not bool(live[r]):
                continue
            s = self.series[k]
            if not s.steps:
                s.threshold = threshold(opt, self.lrs[k])
            s.steps.append(step)
            s.sharpness.append(float(lams[r]))
            if pre is not None:
                s.preconditioned.append(float(pre[r]))

    def keep(self, index: torch.Tensor) -> None:
        """Rows were taken out of the stacked tensors: keep the warm-start vectors of the others."""
        self._v = None if self._v is None else self._v.index_select(0, index.to(self._v.device))
        self._vp = None if self._vp is None else self._vp.index_select(0, index.to(self._vp.device))
