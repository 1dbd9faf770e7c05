"""The population engine: K members (one architecture, each its own learning rate and seed) trained
as one stacked network (model/stacked.py) by one Lightning Trainer in one fit.

Per step: 1. forward (one batched matmul per layer), 2. each member's loss on its own batch,
3. backward of the live members' summed losses (members share no parameter, so each gets exactly
its own gradient), 4. one stock torch optimiser step at lr = 1, rescaled per member to its own lr.
The rescaling is exact for optimisers whose state does not depend on the lr (SGD with or without
momentum, Adam, AdamW: the update is linear in lr), and is the only optimiser maths written here.

Members are independent where it matters: the divergence guard, the pruner and early stopping
each stop one member, whose parameters and optimiser state are frozen from then on (restored
after every step) while the others train on; the fit ends when no member is live. At the end of
each epoch the stopped members are taken out of the stacked tensors (their weights kept aside),
so they cost nothing after that: a third of a default scan diverges within its first steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import lightning.pytorch as pl
import numpy as np
import torch

from dropout_risk.analysis.metrics import binary_metrics
from dropout_risk.errors import ConfigError
from dropout_risk.model.losses import member_losses
from dropout_risk.model.stacked import StackedMLP
from dropout_risk.tracking.names import VAL_LOG_LOSS
from dropout_risk.training.guard import divergence_reason

# Optimisers whose state does not depend on the lr, so that one step at lr = 1 rescaled per member is exact.
RESCALABLE = ("SGD", "Adam", "AdamW")


@dataclass
class Member:
    """One member's course through the fit. status: live | diverged | pruned | stopped (early stopping)."""

    lr: float
    seed: int
    prune: Callable[[float, int], bool] | None = None  # (val log loss, epoch) -> prune now?
    status: str = "live"
    diverged_at_step: int | None = None
    reason: str = ""
    steps: int = 0  # steps trained (including the one that diverged)
    val_history: list[dict[str, float]] = field(default_factory=list)
    val_probs: list[np.ndarray] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's weights, as a plain MLP's state_dict
    es_best: float = math.inf  # early stopping's own best (min_delta applies), as Lightning's EarlyStopping
    es_wait: int = 0


class PopulationBatches:
    """Per epoch, one seeded permutation per distinct member seed (the same sequence of
    permutations InMemoryBatches draws for a plain run with that seed); a batch is x [K, B, F] and
    y [K, B], member k's rows taken in its seed's order."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seeds: list[int]) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        distinct = list(dict.fromkeys(seeds))
        self.generators = [torch.Generator().manual_seed(s) for s in distinct]
        self.which_all = torch.tensor([distinct.index(s) for s in seeds])  # member -> its seed's row
        self.keep(list(range(len(seeds))))

    def keep(self, members: list[int]) -> None:
        """From the next epoch on, batches hold only these members' rows (the others stopped)."""
        self.which, self.k = self.which_all[members], len(members)

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = torch.stack([torch.randperm(n, generator=g) for g in self.generators])  # [S, n]
        xs, ys = self.x[order], self.y[order]  # each seed's epoch in its order: batches are slices
        for start in range(0, n, self.batch_size):
            x, y = xs[:, start : start + self.batch_size], ys[:, start : start + self.batch_size]
            if len(self.generators) == 1:  # one order for all: a view, no copy per member
                yield x.expand(self.k, -1, -1), y.expand(self.k, -1)
            else:
                yield x.index_select(0, self.which), y.index_select(0, self.which)


def check_population_optimizer(optimizer_cls: type) -> None:
    if optimizer_cls.__name__ not in RESCALABLE:
        raise ConfigError(f"optim._target_={optimizer_cls.__module__}.{optimizer_cls.__name__}: a population "
                          f"applies each member's lr exactly only for {', '.join(RESCALABLE)}; choose one of "
                          "them, or pass sweep.population=false")


class PopulationModule(pl.LightningModule):
    """Forward, loss, backward, step for K members at once; per-member guard, validation, best
    epoch, early stopping and pruning at the end of each epoch."""

    def __init__(self, n_features: int, hidden: list[int], activation: str, loss: str, optimizer,
                 members: list[Member], zero_grad: bool = True, guard_factor: float | None = 10.0,
                 early_stopping: tuple[int, float] | None = None, grad_norm: bool = False) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.members = members
        self.net = StackedMLP(n_features, hidden, activation, [m.seed for m in members])
        self.loss_name = loss
        self.loss_fn = member_losses(loss)
        self.optimizer_factory = optimizer
        self.zero_grad_each_step = zero_grad
        self.guard_factor = guard_factor
        self.early_stopping = early_stopping
        self.track_grad_norm = grad_norm
        self.grad_norms: list[torch.Tensor] = []  # [K] per step, when grad_norm
        self.register_buffer("lrs", torch.tensor([m.lr for m in members], dtype=torch.float32), persistent=False)
        self.steps_taken = 0
        self.step_losses: list[torch.Tensor] = []  # [K] per step
        self.epoch_ends: list[int] = []  # steps_taken at the end of each epoch
        # Row r of the stacked tensors is member rows[r]; stopped members leave at an epoch's end.
        self.rows: list[int] = list(range(len(members)))
        self.final_states: dict[int, dict[str, torch.Tensor]] = {}  # weights of members taken out
        self.batches: PopulationBatches | None = None  # told which rows to yield, when set
        self.stability = None  # training.stability.MemberSharpness, when stability.every_n_steps
        self._frozen: torch.Tensor | None = None  # bool [rows], once a member stopped this epoch
        self._first: torch.Tensor | None = None  # each row's first step loss
        self._frozen_copy: dict[int, torch.Tensor] = {}  # id(tensor) -> its frozen values (all rows)
        self.val_y: np.ndarray | None = None
        self.val_tensors: tuple[torch.Tensor, torch.Tensor] | None = None  # set before fit
        self.first_flows: list | None = None  # per member, before its first step (mechanism.figure)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = self.optimizer_factory(self.parameters(), lr=1.0)  # each member's lr is applied after the step
        check_population_optimizer(type(opt))
        return opt

    def _live_mask(self, device) -> torch.Tensor:
        if self._frozen is None:
            return torch.ones(len(self.rows), dtype=torch.bool, device=device)
        return ~self._frozen

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights (its last trained state) under the names of a plain MLP's state_dict."""
        if k in self.final_states:
            return self.final_states[k]
        return self.net.member_state_dict(self.rows.index(k))

    @property
    def live(self) -> list[int]:
        return [k for k, m in enumerate(self.members) if m.status == "live"]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if x.shape[0] != len(self.rows):  # batches not told of the members taken out
            index = torch.tensor(self.rows, device=x.device)
            x, y = x.index_select(0, index), y.index_select(0, index)
        opt = self.optimizers(use_pl_optimizer=False)
        live = self._live_mask(x.device)
        if self.zero_grad_each_step:
            opt.zero_grad()  # forget this and gradients add up across steps
        logits = self.net(x)  # 1. forward, every member on its own rows
        losses = self.loss_fn(logits, y)  # 2. loss per member [K]
        losses[live].sum().backward()  # 3. backward: member k's gradient is d(loss_k)/d(theta_k)
        if self.track_grad_norm:  # ||grad|| of each member's parameters
            self.grad_norms.append(self._per_member(torch.stack([p.grad.pow(2).flatten(1).sum(1)
                                                                 for p in self.net.parameters()]).sum(0).sqrt()))
        before = [p.detach().clone() for p in self.net.parameters()]
        opt.step()  # 4. step at lr = 1 ...
        with torch.no_grad():
            for p, p0 in zip(self.net.parameters(), before, strict=True):
                lr = self.lrs.view(-1, *([1] * (p.dim() - 1)))
                p.sub_(p0).mul_(lr).add_(p0)  # ... rescaled: theta_k <- theta_k + lr_k * update_k
        self._restore_frozen(opt)
        self.steps_taken += 1
        self._count_step()
        detached = losses.detach()
        self.step_losses.append(self._per_member(detached))
        self._guard(detached)
        if self.stability is not None and self.stability.due(self.steps_taken):
            self.stability.estimate(self, self.rows, self._live_mask(detached.device))
        return detached.sum()

    def _per_member(self, values: torch.Tensor) -> torch.Tensor:
        """[rows] -> [K], NaN for members taken out (their series ended at their last step)."""
        if len(self.rows) == len(self.members):
            return values
        out = values.new_full((len(self.members),), math.nan)
        out[torch.tensor(self.rows, device=values.device)] = values
        return out

    def _count_step(self) -> None:
        """What Lightning's optimizer wrapper does around a step: keeps trainer.global_step true."""
        if self._trainer is not None:
            progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
            progress.increment_ready()
            progress.increment_completed()

    def _guard(self, losses: torch.Tensor) -> None:
        """Per member, as DivergenceGuard: the same rule vectorised over members (one sync per step),
        then the same reason for each member it stops."""
        if self._first is None:
            self._first = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))
        if self.guard_factor is None:
            return
        bad = ~torch.isfinite(losses) | (losses > self.guard_factor * self._first.clamp_min(1e-12))
        bad &= self._live_mask(losses.device)
        if not bool(bad.any()):  # the one device sync per step, as the plain guard's
            return
        values, first = losses.tolist(), self._first.tolist()
        for r in torch.nonzero(bad).flatten().tolist():
            k = self.rows[r]
            m = self.members[k]
            m.reason = divergence_reason(values[r], first[r] if math.isfinite(first[r]) else None,
                                         self.guard_factor, self.steps_taken)
            m.diverged_at_step = self.steps_taken
            self._freeze(k, "diverged")

    def _freeze(self, k: int, status: str) -> None:
        """Member k stops here: its parameters and optimiser state keep their present values."""
        self.members[k].status = status
        self.members[k].steps = self.steps_taken
        opt = self.optimizers(use_pl_optimizer=False)
        if self._frozen is None:
            self._frozen = torch.zeros(len(self.rows), dtype=torch.bool, device=self.lrs.device)
        r = self.rows.index(k)
        self._frozen[r] = True
        for t in self._tensors(opt):
            copy = self._frozen_copy.setdefault(id(t), t.detach().clone())
            copy[r] = t.detach()[r]
        if not self.live and self._trainer is not None:
            self.trainer.should_stop = True

    def _tensors(self, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
        """Each parameter and each per-member optimiser state tensor (not Adam's scalar step count)."""
        out = []
        for p in self.net.parameters():
            out.append(p)
            out.extend(v for v in opt.state.get(p, {}).values()
                       if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == len(self.rows))
        return out

    @torch.no_grad()
    def _compact(self) -> None:
        """Take the stopped members out of the stacked parameters, gradients and optimiser state
        (their weights kept in final_states); the live ones train on exactly as before."""
        keep = [r for r, k in enumerate(self.rows) if self.members[k].status == "live"]
        if not keep or len(keep) == len(self.rows):
            return
        for r, k in enumerate(self.rows):
            if self.members[k].status != "live":
                self.final_states[k] = self.net.member_state_dict(r)
        index = torch.tensor(keep, device=self.lrs.device)
        opt = self.optimizers(use_pl_optimizer=False)
        for p in self.net.parameters():
            state = opt.state.get(p, {})
            for key, v in list(state.items()):
                if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == len(self.rows):
                    state[key] = v.index_select(0, index)
            p.data = p.data.index_select(0, index)
            if p.grad is not None:  # kept: without zero_grad the live members' gradients add up on
                p.grad = p.grad.index_select(0, index)
        self.lrs = self.lrs.index_select(0, index)
        self._first = self._first.index_select(0, index) if self._first is not None else None
        self.rows = [self.rows[r] for r in keep]
        self._frozen, self._frozen_copy = None, {}
        if self.stability is not None:
            self.stability.keep(index)
        if self.batches is not None:
            self.batches.keep(self.rows)

    def _restore_frozen(self, opt: torch.optim.Optimizer) -> None:
        if self._frozen is None:
            return
        with torch.no_grad():
            for t in self._tensors(opt):
                copy = self._frozen_copy.get(id(t))
                if copy is None:  # state created after the freeze (none for SGD/Adam/AdamW)
                    continue
                mask = self._frozen.view(-1, *([1] * (t.dim() - 1)))
                t.copy_(torch.where(mask, copy, t))

    def on_train_end(self) -> None:
        for m in self.members:
            if m.status == "live":
                m.steps = self.steps_taken

    def on_train_epoch_end(self) -> None:
        """Validation of every member still training or stopped during this epoch; then per
        member: best epoch, early stopping, the pruner."""
        self.epoch_ends.append(self.steps_taken)
        epoch = len(self.epoch_ends)
        started = self.epoch_ends[-2] if epoch > 1 else 0
        due = [k for k, m in enumerate(self.members) if len(m.val_history) < epoch
               and (m.status == "live" or m.steps > started)]
        if not due:
            return
        metrics = self.validate_members(due)
        for k, row in zip(due, metrics, strict=True):
            m = self.members[k]
            value = row[VAL_LOG_LOSS]
            if math.isfinite(value) and value < m.best_value:  # strict: ties keep the earlier epoch
                m.best_value, m.best_epoch = value, len(m.val_history)
                m.best_state = self.net.member_state_dict(self.rows.index(k))
            if m.status != "live":
                continue
            if self.early_stopping is not None:
                patience, min_delta = self.early_stopping
                if value < m.es_best - min_delta:  # as Lightning's EarlyStopping (mode=min)
                    m.es_best, m.es_wait = value, 0
                else:
                    m.es_wait += 1
                    if m.es_wait >= patience:
                        self._freeze(k, "stopped")
                        continue
            if m.prune is not None and math.isfinite(value) and m.prune(value, epoch):
                self._freeze(k, "pruned")
        if not self.live and self._trainer is not None:
            self.trainer.should_stop = True
        elif self._trainer is not None:
            self._compact()

    @torch.no_grad()
    def validate_members(self, ks: list[int]) -> list[dict[str, float]]:
        """Loss and metrics of the validation split for members `ks` (one forward pass for all)."""
        x, y = self.val_tensors
        x, y = x.to(self.device), y.to(self.device)
        was_training = self.training
        self.eval()
        logits = self.net(x)[[self.rows.index(k) for k in ks]]
        self.train(was_training)
        losses = self.loss_fn(logits, y.expand_as(logits)).tolist()
        probs = torch.sigmoid(logits.double()).cpu().numpy()
        if self.val_y is None:
            self.val_y = y.cpu().numpy().astype(np.int64)
        out = []
        for k, loss, p in zip(ks, losses, probs, strict=True):
            metrics = {"val/loss": loss, **{f"val/{key}": v for key, v in binary_metrics(self.val_y, p).items()}}
            self.members[k].val_probs.append(p)
            self.members[k].val_history.append(metrics)
            out.append(metrics)
        return out
