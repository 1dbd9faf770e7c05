"""The divergence guard: the cases mutation testing showed unguarded (docs/testing.md): its
defaults, plain-float losses, and which step it reports when the trainer has not counted one yet
(gradient accumulation) or when batch_idx restarts in a later epoch."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from dropout_risk.training.guard import DivergenceGuard


def test_defaults_factor_ten_and_not_diverged() -> None:
    guard = DivergenceGuard()
    assert guard.factor == 10.0
    assert guard.diverged is False and guard.diverged_at_step is None and guard.reason == ""
    trainer = SimpleNamespace(global_step=1, should_stop=False)
    guard.on_train_batch_end(trainer, None, torch.tensor(1.0), None, 0)
    trainer.global_step = 2
    guard.on_train_batch_end(trainer, None, torch.tensor(10.5), None, 1)  # 10.5 > 10 x 1, not > 11 x 1
    assert guard.diverged is True and guard.diverged_at_step == 2 and trainer.should_stop


@pytest.mark.parametrize("outputs", [7.5, {"loss": 7.5}])
def test_a_plain_float_loss_is_read(outputs) -> None:
    guard = DivergenceGuard(factor=3.0)
    trainer = SimpleNamespace(global_step=1, should_stop=False)
    guard.on_train_batch_end(trainer, None, 2.0, None, 0)
    trainer.global_step = 2
    guard.on_train_batch_end(trainer, None, outputs, None, 1)
    assert guard.first_loss == 2.0
    assert guard.reason == "loss 7.5 > 3 x first loss 2 at step 2"


@pytest.mark.parametrize(
    ("global_step", "batch_idx", "expected"),
    [
        (0, 0, 1),  # accumulating gradients: no optimiser step yet, the batch counts from 1
        (0, 2, 3),
        (1, 3, 1),  # the first optimiser step, taken after 4 accumulated batches
        (11, 0, 11),  # a later epoch: batch_idx restarted, the global step did not
    ],
)
def test_the_reported_step_is_the_global_step_else_the_batch(global_step, batch_idx, expected) -> None:
    guard = DivergenceGuard()
    trainer = SimpleNamespace(global_step=global_step, should_stop=False)
    guard.on_train_batch_end(trainer, None, torch.tensor(math.nan), None, batch_idx)
    assert guard.diverged_at_step == expected
    assert guard.reason == f"loss became nan at step {expected}"
