"""The MLP against its baselines on the same rows, with intervals: what a run reports besides
its own metrics.

- `test/<metric>_ci_low|_ci_high`: 95% stratified-bootstrap intervals of the MLP's headline test
  metrics;
- `baseline/<name>/<split>/<metric>`: each baseline's metrics on the same val and test rows;
- `vs_baseline/test/<metric>_diff` (+ `_ci_low`, `_ci_high`): the MLP minus the best baseline
  (lowest validation log loss: chosen without looking at test) on test AUROC and log loss, with a
  95% paired-bootstrap interval (the same resampled students for both models).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dropout_risk.analysis.bootstrap import HEADLINE, intervals, paired_difference
from dropout_risk.analysis.metrics import binary_metrics, truth_metrics
from dropout_risk.analysis.smece import smece
from dropout_risk.model.baselines import Baseline

VERDICT_METRICS = ("auroc", "log_loss")


@dataclass
class Verdict:
    baseline: str
    diffs: dict[str, tuple[float, float, float]]  # metric -> (MLP - baseline, low, high)

    def line(self) -> str:
        """One line: the difference, its interval, and what it means."""
        parts = []
        for metric, (d, lo, hi) in self.diffs.items():
            better = (lo > 0 or hi < 0) and ((d > 0) == (metric == "auroc"))
            worse = (lo > 0 or hi < 0) and not better
            word = "MLP better" if better else ("MLP worse" if worse else "no clear difference")
            parts.append(f"{metric} {d:+.4f} [{lo:+.4f}, {hi:+.4f}] ({word})")
        return f"MLP - {self.baseline} on test (95% paired bootstrap): " + "; ".join(parts)


def interval_metrics(y: np.ndarray, p: np.ndarray, n_resamples: int, seed: int) -> dict[str, float]:
    """`test/<metric>_ci_low|_ci_high` of the headline metrics (nan when p is not finite); none
    when `n_resamples` is 0."""
    out: dict[str, float] = {}
    if n_resamples == 0:
        return out
    for metric, (lo, hi) in intervals(y, p, n_resamples=n_resamples, seed=seed).items():
        out[f"test/{metric}_ci_low"], out[f"test/{metric}_ci_high"] = lo, hi
    return out


def baseline_metrics(baselines: list[Baseline], y: dict[str, np.ndarray],
                     p_true: dict[str, np.ndarray | None]) -> dict[str, float]:
    out = {}
    for b in baselines:
        for split in ("val", "test"):
            m = binary_metrics(y[split], b.p[split])
            m["smece"] = smece(y[split], b.p[split])
            if p_true[split] is not None:
                m.update(truth_metrics(y[split], b.p[split], p_true[split]))
            out.update({f"baseline/{b.name}/{split}/{k}": v for k, v in m.items()})
        out[f"time/baseline_{b.name}_fit_s"] = b.fit_s  # time/: not compared by reproduce
    return out


def best_baseline(baselines: list[Baseline], y_val: np.ndarray) -> Baseline | None:
    """The baseline with the lowest validation log loss (test is not looked at)."""
    if not baselines:
        return None
    return min(baselines, key=lambda b: binary_metrics(y_val, b.p["val"])["log_loss"])


def versus_best_baseline(baselines: list[Baseline], y: dict[str, np.ndarray], p_test: np.ndarray,
            n_resamples: int, seed: int) -> tuple[Verdict | None, dict[str, float]]:
    """The MLP minus the best baseline on test, with paired-bootstrap intervals, and its metrics."""
    best = best_baseline(baselines, y["val"])
    if best is None or n_resamples == 0 or not np.all(np.isfinite(p_test)):
        return None, {}
    diffs = paired_difference(y["test"], p_test, best.p["test"], n_resamples=n_resamples, seed=seed,
                              metrics=VERDICT_METRICS)
    metrics = {}
    for metric, (d, lo, hi) in diffs.items():
        metrics[f"vs_baseline/test/{metric}_diff"] = d
        metrics[f"vs_baseline/test/{metric}_diff_ci_low"] = lo
        metrics[f"vs_baseline/test/{metric}_diff_ci_high"] = hi
    return Verdict(best.name, diffs), metrics


__all__ = ["HEADLINE", "Verdict", "baseline_metrics", "best_baseline", "interval_metrics", "versus_best_baseline"]
