"""The catapult of a training-loss curve (Lewkowycz et al. 2020, "The large learning rate phase of
deep learning: the catapult mechanism"): at a learning rate above the plain-GD threshold
2/lambda_max but below the point of no return, the loss first rises, the sharpness drops while it
does, and the loss then comes back down, often below where it started.

With the divergence guard on (``guard.factor`` x the first loss, 10 by default), a run whose loss
rises above that factor is stopped and counts as diverged: only rises below the guard's factor
can be seen, so ``margin`` must be below ``guard.factor - 1`` to mean anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Catapult:
    """A rise above (1 + margin) x the starting loss and the return below it; steps are 1-based."""

    peak_step: int  # the highest loss before the return
    peak_loss: float
    back_step: int  # the first step whose loss is below the starting loss again, after the rise


def catapult(losses: Sequence[float] | np.ndarray, first: float | None = None, margin: float = 0.5) -> Catapult | None:
    """The catapult in a run's per-step training losses (``losses[0]`` is step 1), or None.

    A catapult: some loss rose above ``(1 + margin) x first`` (``first`` = ``losses[0]`` unless
    given), a later loss came back below ``first``, and every loss is finite (a run that ended in
    NaN or inf diverged, whatever it did before). Its ``peak_step`` is the highest loss before
    ``back_step``, the first step below ``first`` after the first rise. None when the loss never
    rose that far, rose and never came back, or did not stay finite.

    Raises ValueError when ``margin`` is not a positive number, ``losses`` is empty or not
    one-dimensional, or the starting loss is not a positive finite number (given as ``first``, or
    ``losses[0]`` when that is finite: a non-finite ``losses[0]`` is a diverged run, None).
    """
    if not margin > 0 or not math.isfinite(margin):
        raise ValueError(f"catapult: margin={margin!r} must be a positive number (a rise above (1 + margin) x the "
                         "starting loss counts), e.g. margin=0.5; below guard.factor - 1 to be seen with the guard on")
    values = np.asarray(losses, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"catapult: losses must be a non-empty 1-D sequence of per-step losses, got shape "
                         f"{values.shape}; pass the run's training loss at every step, step 1 first")
    if first is None and not math.isfinite(values[0]):
        return None
    start = float(values[0] if first is None else first)
    if not (math.isfinite(start) and start > 0):
        raise ValueError(f"catapult: the starting loss must be a positive finite number, got first={start!r}; "
                         "pass first= the loss at step 1 (or leave it None to use losses[0])")
    if not np.isfinite(values).all():
        return None
    rose = np.logical_or.accumulate(values > (1.0 + margin) * start)  # True from the first rise on
    back = rose & (values < start)
    if not back.any():
        return None
    b = int(np.argmax(back))
    peak = int(np.argmax(values[:b]))
    return Catapult(peak_step=peak + 1, peak_loss=float(values[peak]), back_step=b + 1)
