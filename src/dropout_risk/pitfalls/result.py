"""What a pitfall preset returns, and the epoch early stopping would have picked."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dropout_risk.compare.run import Comparison
from dropout_risk.training.train import RunResult


@dataclass
class PitfallResult:
    name: str
    pitfall_run_id: str
    healthy_run_id: str
    comparison: Comparison
    explanation: list[str]


def best_val_epoch(result: RunResult) -> int:
    """1-based epoch of the lowest validation log loss (the last epoch when none is finite)."""
    losses = np.array([h.get("val/log_loss", math.nan) for h in result.val_history], dtype=float)
    if not np.isfinite(losses).any():
        return max(len(losses), 1)
    return int(np.nanargmin(losses)) + 1
