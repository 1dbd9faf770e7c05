"""The stability thresholds the sharpness is compared with: 2/lambda_max (the largest stable step
of plain gradient descent on a quadratic), 2/lr (the sharpness above which gradient descent at
step lr is unstable: the edge of stability, Cohen et al. 2021) and Adam's (2 + 2 beta1)/((1 -
beta1) lr) for the preconditioned sharpness (Cohen et al. 2022)."""

from __future__ import annotations

import math


def gd_threshold(lmax: float) -> float:
    """2 / lambda_max: the largest stable step of plain gradient descent on a quadratic.

    Infinite when lambda_max <= 0 (no positive curvature to overshoot), NaN when it is NaN.
    Momentum and adaptive optimisers (Adam, AdamW, ...) have other thresholds: this is the
    plain-GD reference.
    """
    lmax = float(lmax)
    return math.nan if math.isnan(lmax) else (math.inf if lmax <= 0 else 2.0 / lmax)


def gd_lr_threshold(lr: float) -> float:
    """2 / lr: the sharpness above which plain gradient descent at step ``lr`` is unstable."""
    return 2.0 / float(lr)


def adam_threshold(lr: float, beta1: float = 0.9) -> float:
    """(2 + 2 beta1) / ((1 - beta1) lr): the preconditioned sharpness above which Adam with a
    frozen preconditioner is unstable (38/lr at beta1 = 0.9; Cohen et al. 2022, the EMA-momentum
    threshold)."""
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * float(lr))
