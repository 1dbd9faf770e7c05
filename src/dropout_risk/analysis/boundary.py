"""The observed divergence boundary of a learning-rate scan."""

from __future__ import annotations

import numpy as np
import pandas as pd


def observed_boundary(summary: pd.DataFrame) -> tuple[float | None, float | None]:
    """The observed divergence boundary of a learning-rate scan: (largest converged lr, smallest diverged lr).

    ``summary`` has one row per trial with at least the columns ``lr`` and ``outcome``
    (``converged`` | ``diverged`` | ``pruned`` | ``failed``), and optionally ``phase``: when it is
    present only ``scan`` rows count (refine trials may vary other hyperparameters too). The
    lower end is the largest lr that converged *below* the smallest diverged lr (a converged lr
    above it, from a noisy scan, does not make the boundary look larger than it is). Either end
    is None when the scan has no such trial: (x, None) when nothing diverged, (None, x) when
    nothing converged below the first divergence.
    """
    missing = [c for c in ("lr", "outcome") if c not in summary.columns]
    if missing:
        raise ValueError(f"observed_boundary: summary lacks column(s) {missing}; it has {list(summary.columns)}")
    rows = summary
    if "phase" in rows.columns:
        rows = rows[rows["phase"].astype(str) == "scan"]
    lr = pd.to_numeric(rows["lr"], errors="coerce").to_numpy(dtype=np.float64)
    outcome = rows["outcome"].astype(str).to_numpy()
    ok = np.isfinite(lr) & (lr > 0)
    diverged = lr[ok & (outcome == "diverged")]
    converged = lr[ok & (outcome == "converged")]
    hi = float(diverged.min()) if diverged.size else None
    if hi is not None:
        converged = converged[converged < hi]
    lo = float(converged.max()) if converged.size else None
    return lo, hi
