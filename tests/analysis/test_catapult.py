"""catapult: a rise above (1 + margin) x the starting loss, then back below it, finite to the end."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from dropout_risk.analysis.catapult import Catapult, catapult


def test_clean_catapult_has_its_peak_and_return_steps() -> None:
    losses = [1.0, 0.9, 1.2, 2.0, 1.8, 1.1, 0.8, 0.6]  # above 1.5 at step 4, below 1.0 again at step 7
    assert catapult(losses) == Catapult(peak_step=4, peak_loss=2.0, back_step=7)
    assert catapult(np.asarray(losses, dtype=np.float32)) == Catapult(4, 2.0, 7)  # arrays work alike


def test_the_return_counts_only_after_the_rise() -> None:
    found = catapult([1.0, 0.8, 2.5, 3.0, 0.9, 2.0, 0.5])  # the dip at step 2 is before the rise
    assert found == Catapult(peak_step=4, peak_loss=3.0, back_step=5)  # the first return, not step 7


def test_explicit_first_loss() -> None:
    assert catapult([2.0, 2.9, 0.9], first=1.0) == Catapult(peak_step=2, peak_loss=2.9, back_step=3)
    assert catapult([2.0, 2.9, 0.9]) is None  # against losses[0] = 2 it never rose above 1.5 x 2 = 3


@pytest.mark.parametrize(
    "losses",
    [
        pytest.param([1.0, 0.9, 0.7, 0.5, 0.4], id="monotone-decrease"),
        pytest.param([1.0, 1.2, 2.0, 1.8, 1.4, 1.1], id="rose-never-came-back"),
        pytest.param([1.0, 2.0, 3.0, math.nan, math.nan], id="rose-then-nan"),
        pytest.param([1.0, 2.0, 0.5, 0.4, math.nan], id="came-back-then-nan"),
        pytest.param([1.0, 2.0, 0.5, math.inf], id="came-back-then-inf"),
        pytest.param([1.0, 1.49, 0.5, 0.3], id="just-below-the-margin"),
        pytest.param([1.0, 1.5, 0.5, 0.3], id="exactly-at-the-margin"),
        pytest.param([math.nan, 2.0, 0.5], id="nan-from-the-start"),
        pytest.param([1.0], id="one-step"),
    ],
)
def test_not_a_catapult(losses: list[float]) -> None:
    assert catapult(losses) is None


def test_margin_sets_how_far_it_must_rise() -> None:
    losses = [1.0, 1.51, 0.5]
    assert catapult(losses, margin=0.5) == Catapult(2, 1.51, 3)
    assert catapult(losses, margin=0.6) is None
    assert catapult([1.0, 9.5, 0.5], margin=8.0) == Catapult(2, 9.5, 3)  # a rise still below a guard factor of 10


@pytest.mark.parametrize("margin", [0.0, -0.5, math.nan, math.inf])
def test_bad_margin_is_a_value_error_naming_the_fix(margin: float) -> None:
    with pytest.raises(ValueError, match=r"margin=.* must be a positive number .* e\.g\. margin=0\.5"):
        catapult([1.0, 2.0, 0.5], margin=margin)


@pytest.mark.parametrize("losses", [[], np.empty(0), np.ones((2, 2))])
def test_losses_must_be_a_non_empty_sequence(losses) -> None:
    with pytest.raises(ValueError, match="losses must be a non-empty 1-D sequence"):
        catapult(losses)


@pytest.mark.parametrize("first", [0.0, -1.0, math.nan])
def test_bad_starting_loss_is_a_value_error(first: float) -> None:
    with pytest.raises(ValueError, match="starting loss must be a positive finite number"):
        catapult([1.0, 2.0, 0.5], first=first)


def test_result_is_frozen() -> None:
    found = catapult([1.0, 2.0, 0.5])
    assert found is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.peak_step = 3  # type: ignore[misc]
