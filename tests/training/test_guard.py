"""The divergence guard on constructed loss sequences: where it stops, and why.

The guard is driven the way Lightning's fit loop drives it: after each optimiser step (the
trainer's global_step already counts it) `on_train_batch_end` sees the step's loss, and the loop
ends after the first batch that set `trainer.should_stop`.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from dropout_risk.training.guard import DivergenceGuard


def _fit(losses: list[float], factor: float = 10.0, as_dict: bool = False):
    """Feed `losses` one step at a time until the guard stops training; returns the guard,
    the trainer and the number of steps taken."""
    guard = DivergenceGuard(factor)
    trainer = SimpleNamespace(global_step=0, should_stop=False)
    taken = 0
    for batch_idx, value in enumerate(losses):
        trainer.global_step += 1
        loss = torch.tensor(value)
        guard.on_train_batch_end(trainer, None, {"loss": loss} if as_dict else loss, None, batch_idx)
        taken += 1
        if trainer.should_stop:
            break
    return guard, trainer, taken


def test_a_healthy_sequence_never_stops() -> None:
    guard, trainer, taken = _fit([0.5, 0.9, 4.9, 0.4, 5.0])  # 5.0 is exactly 10 x 0.5: not above
    assert taken == 5 and not trainer.should_stop
    assert not guard.diverged and guard.diverged_at_step is None and guard.reason == ""
    assert guard.first_loss == 0.5


def test_stops_at_the_first_loss_above_factor_times_the_first() -> None:
    # later losses are bad too: a guard that did not stop training would go on and report them
    guard, trainer, taken = _fit([0.7, 0.8, 6.9, 7.1, 50.0, 3.0, 80.0])
    assert trainer.should_stop
    assert taken == 4
    assert guard.diverged and guard.diverged_at_step == 4
    assert guard.reason == "loss 7.1 > 10 x first loss 0.7 at step 4"


def test_factor_and_dict_outputs() -> None:
    guard, trainer, taken = _fit([1.0, 2.5, 3.5, 1.0], factor=3.0, as_dict=True)
    assert trainer.should_stop and taken == 3 and guard.diverged_at_step == 3
    assert guard.reason == "loss 3.5 > 3 x first loss 1 at step 3"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_stops_with_its_own_reason(bad: float) -> None:
    """NaN is never "> factor x first", and inf is not merely large: both must stop as non-finite."""
    guard, trainer, taken = _fit([0.7, 0.69, bad, 0.6, bad])
    assert trainer.should_stop and taken == 3
    assert guard.diverged and guard.diverged_at_step == 3
    assert guard.reason == f"loss became {bad} at step 3"


def test_a_non_finite_first_loss_stops_at_step_one() -> None:
    guard, trainer, taken = _fit([math.nan, 0.7, 0.7])
    assert trainer.should_stop and taken == 1
    assert guard.diverged_at_step == 1 and guard.reason == "loss became nan at step 1"
    assert guard.first_loss is None  # a non-finite loss is never the reference
