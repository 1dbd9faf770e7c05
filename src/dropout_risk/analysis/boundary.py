"""The observed divergence boundary of a learning-rate scan."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dropout_risk.tracking.names import CONVERGED


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
    rows = _scan_rows(summary, "observed_boundary")
    lr = rows["lr"].to_numpy(dtype=np.float64)
    outcome = rows["outcome"].astype(str).to_numpy()
    diverged = lr[outcome == "diverged"]
    converged = lr[np.isin(outcome, CONVERGED)]
    hi = float(diverged.min()) if diverged.size else None
    if hi is not None:
        converged = converged[converged < hi]
    lo = float(converged.max()) if converged.size else None
    return lo, hi


FINISHED = (*CONVERGED, "diverged", "pruned")  # outcomes that say whether a seed diverged; failed ones do not
SPREAD_METRICS = ("train_loss", "val_loss", "auroc", "ece")


def _scan_rows(summary: pd.DataFrame, caller: str) -> pd.DataFrame:
    """The scan rows with a positive finite lr (all rows when there is no ``phase`` column)."""
    missing = [c for c in ("lr", "outcome") if c not in summary.columns]
    if missing:
        raise ValueError(f"{caller}: summary lacks column(s) {missing}; it has {list(summary.columns)}")
    rows = summary if "phase" not in summary.columns else summary[summary["phase"].astype(str) == "scan"]
    lr = pd.to_numeric(rows["lr"], errors="coerce")
    return rows.assign(lr=lr)[np.isfinite(lr) & (lr > 0)]


def per_lr(summary: pd.DataFrame) -> pd.DataFrame:
    """The scan aggregated per learning rate: one row per distinct scanned lr, in increasing order.

    Columns: ``lr``, ``n_seeds`` (scan trials at that lr, whatever their outcome), ``n_finished``
    (converged, diverged or pruned: a failed or interrupted trial says nothing about divergence),
    ``n_diverged``, ``frac_diverged`` = n_diverged / n_finished (NaN when nothing finished), and
    for each of train_loss, val_loss, auroc, ece its ``_median``, ``_min`` and ``_max`` over the
    finished seeds that did not diverge (NaN when there are none, or the column is absent).
    Rows are as for ``observed_boundary``: scan rows only when ``phase`` is present.
    """
    rows = _scan_rows(summary, "per_lr")
    outcome = rows["outcome"].astype(str)
    kept = rows.assign(
        _finished=outcome.isin(FINISHED), _diverged=outcome == "diverged",
        _key=rows["lr"].map(lambda v: float(f"{v:.12g}")),  # one lr per grid point despite float noise
    )
    groups = kept.groupby("_key", sort=True)
    out = pd.DataFrame({"lr": groups["lr"].min(), "n_seeds": groups.size().astype("int64"),
                        "n_finished": groups["_finished"].sum().astype("int64"),
                        "n_diverged": groups["_diverged"].sum().astype("int64")})
    out["frac_diverged"] = (out.n_diverged / out.n_finished.where(out.n_finished > 0)).astype("float64")
    ok = kept[kept["_finished"] & ~kept["_diverged"]]
    for col in SPREAD_METRICS:
        values = pd.to_numeric(ok[col], errors="coerce") if col in ok.columns else pd.Series(np.nan, ok.index)
        stats = values.groupby(ok["_key"]).agg(["median", "min", "max"]).reindex(out.index)
        for stat in ("median", "min", "max"):
            out[f"{col}_{stat}"] = stats[stat].astype("float64")
    return out.reset_index(drop=True)


def divergence_interval(summary: pd.DataFrame) -> tuple[float | None, float | None]:
    """Where divergence sets in across seeds: (lo, hi) from the per-lr fractions of ``per_lr``.

    ``lo`` is the largest scanned lr such that it and every smaller scanned lr had no diverged
    seed (fraction 0); ``hi`` the smallest scanned lr such that it and every larger one had every
    finished seed diverge (fraction 1). Between them lie the mixed lrs, where the outcome depends
    on the seed. Requiring all smaller (larger) lrs to agree means a stray divergence at a small
    lr pulls ``lo`` below it rather than being ignored. An lr where no seed finished is no
    evidence either way and is skipped. Either end is None when it does not exist (the smallest
    lr already had a diverged seed; the largest lr had a seed that did not diverge). A pruned seed
    counts as not diverged. With one seed per lr and a clean step (no converged lr above a
    diverged one, nothing pruned) this is ``observed_boundary``.
    """
    return interval_of(per_lr(summary))


def interval_of(per: pd.DataFrame) -> tuple[float | None, float | None]:
    """``divergence_interval`` from a ``per_lr`` table already computed."""
    frac = per.dropna(subset=["frac_diverged"])
    lrs, f = frac["lr"].to_numpy(dtype=np.float64), frac["frac_diverged"].to_numpy(dtype=np.float64)
    clean_below = np.cumprod(f == 0).astype(bool)  # True while every lr so far had no divergence
    all_above = np.cumprod((f == 1)[::-1])[::-1].astype(bool)  # True while every larger lr fully diverged
    lo = float(lrs[clean_below].max()) if clean_below.any() else None
    hi = float(lrs[all_above].min()) if all_above.any() else None
    return lo, hi
