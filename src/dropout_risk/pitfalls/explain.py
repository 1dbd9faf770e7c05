"""The explanation of a pitfall, computed from its two runs."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from dropout_risk.format import sig
from dropout_risk.pitfalls.result import PitfallResult, best_val_epoch
from dropout_risk.tracking.names import CONVERGED
from dropout_risk.training.train import RunResult

KEY_METRICS = ("val/log_loss", "val/auroc", "val/ece", "val/brier", "val/log_loss_calibrated", "val/ece_calibrated",
               "test/log_loss", "test/auroc", "train/loss_epoch", "epochs_completed")


def key_table(result: PitfallResult) -> str:
    """The headline metrics of the two runs, one column each."""
    frame = result.comparison.table.set_index("run_id")
    rows = [k for k in KEY_METRICS if k in frame.columns]
    table = frame.loc[[result.pitfall_run_id, result.healthy_run_id], ["outcome", *rows]].T
    table.columns = ["pitfall", "healthy"]
    return table.to_string(float_format=lambda v: f"{v:.4g}")


def _signed_pct(new: float, old: float) -> str:
    return f"{100 * (new / old - 1):+.0f}%"


def _recovered(worst: float, calibrated: float, best: float) -> float:
    """Share of the rise from `best` to `worst` that calibration took back."""
    return (worst - calibrated) / (worst - best)


def _epoch_means(values: Sequence[float], n_epochs: int) -> np.ndarray:
    """Per-epoch means of a per-step series (the last epoch may be cut short by the guard)."""
    v = np.asarray(values, dtype=float)
    return np.array([np.nanmean(chunk) for chunk in np.array_split(v, max(n_epochs, 1)) if chunk.size])


def explain_no_zero_grad(pitfall: RunResult, healthy: RunResult) -> list[str]:
    g_bad, g_good = np.asarray(pitfall.grad_norms, dtype=float), np.asarray(healthy.grad_norms, dtype=float)
    lines = []
    if g_bad.size and g_good.size:
        lines.append(
            f"Without zero_grad every step adds its gradient to all earlier ones: the gradient the optimiser "
            f"used grew from {sig(g_bad[0])} at step 1 to {sig(np.nanmax(g_bad))} at its largest "
            f"({sig(np.nanmax(g_bad) / g_bad[0])}x), while with zero_grad it peaked at {sig(np.nanmax(g_good))} "
            f"and ended at {sig(g_good[-1])}.")
    if pitfall.outcome == "diverged":
        lines.append(f"The divergence guard stopped the pitfall run at step {pitfall.diverged_at_step}; the same "
                     f"learning rate with zero_grad {healthy.outcome}.")
    tb, th = _epoch_means(pitfall.train_loss, len(pitfall.val_history)), _epoch_means(
        healthy.train_loss, len(healthy.val_history))
    if tb.size > 1:
        ups = int(np.sum(np.diff(tb) > 0))
        lines.append(f"Its training loss per epoch went up in {ups} of {tb.size - 1} epochs (healthy: "
                     f"{int(np.sum(np.diff(th) > 0))} of {max(th.size - 1, 0)}) and ended at {sig(tb[-1])} "
                     f"against {sig(th[-1])}.")
    m, h = pitfall.metrics, healthy.metrics
    lines.append(f"On validation: log loss {sig(m['val/log_loss'])} vs {sig(h['val/log_loss'])}, AUROC "
                 f"{sig(m['val/auroc'])} vs {sig(h['val/auroc'])} (0.5 is chance), ECE {sig(m['val/ece'])} vs "
                 f"{sig(h['val/ece'])}.")
    if m["val/auroc"] < 0.6 and m["val/ece"] <= h["val/ece"]:
        lines.append("Its ECE is no worse only because it predicts nearly the same risk for every student: "
                     "calibrated on average, but it cannot tell students apart (AUROC near 0.5).")
    return lines


def explain_loss_only(pitfall: RunResult, healthy: RunResult) -> list[str]:
    hist = pitfall.val_history
    val = np.array([e["val/log_loss"] for e in hist], dtype=float)
    ece = np.array([e["val/ece"] for e in hist], dtype=float)
    train_epochs = _epoch_means(pitfall.train_loss, len(hist))
    best = best_val_epoch(pitfall)
    n = len(hist)
    falling = int(np.sum(np.diff(train_epochs) < 0))
    m, h = pitfall.metrics, healthy.metrics
    lines = [
        f"Training loss fell from {sig(train_epochs[0])} to {sig(train_epochs[-1])} over {n} epochs (lower than the "
        f"epoch before in {falling} of {n - 1}): watched alone, it looks like steady progress.",
        f"Validation log loss was lowest at epoch {best} ({sig(val[best - 1])}) and then rose to {sig(val[-1])} at "
        f"epoch {n} ({_signed_pct(val[-1], val[best - 1])}); ECE went from {sig(ece[best - 1])} to {sig(ece[-1])}.",
        _temperature_line(m, val[-1], val[best - 1]),
        f"The healthy counterpart stops at epoch {best}, where validation said to: test log loss "
        f"{sig(h['test/log_loss'])} vs {sig(m['test/log_loss'])}, test ECE {sig(h['test/ece'])} vs {sig(m['test/ece'])}, "
        f"test AUROC {sig(h['test/auroc'])} vs {sig(m['test/auroc'])}.",
    ]
    return lines


def _temperature_line(m: dict[str, float], last: float, best: float) -> str:
    t = m["temperature"]
    line = (f"Temperature scaling of the final model (T = {sig(t)} {'>' if t > 1 else '<'} 1, fitted on validation: "
            f"it was {'over' if t > 1 else 'under'}confident) brings validation log loss from {sig(m['val/log_loss'])} "
            f"to {sig(m['val/log_loss_calibrated'])} and ECE from {sig(m['val/ece'])} to {sig(m['val/ece_calibrated'])}")
    if not last > best:
        return line + "."
    share = _recovered(last, m["val/log_loss_calibrated"], best)
    verdict = ("most of the rise was overconfidence, which one temperature undoes" if share >= 0.5 else
               "most of it is not a matter of confidence: the model also ranks students worse")
    return line + f": it takes back {sig(100 * share)}% of the rise in validation log loss; {verdict}."


def explain_lr_divergence(sweep_result, bad, good, scan, bad_losses: Sequence[float]) -> list[str]:
    """`bad`, `good`: summary rows of the diverged and converged trials; `bad_losses`: the diverged
    trial's training loss per step."""
    n_div = int((scan.outcome == "diverged").sum())
    n_conv = int(scan.outcome.isin(CONVERGED).sum())
    lines = [
        f"Scanned {len(scan)} learning rates from {sig(scan.lr.min())} to {sig(scan.lr.max())}: {n_conv} converged, "
        f"{n_div} diverged.",
        f"The largest that converged, lr = {sig(good.lr)}, reached validation log loss {sig(good.val_loss)} "
        f"(AUROC {sig(good.auroc)}, ECE {sig(good.ece)}).",
    ]
    steps = ", ".join(sig(v) for v in bad_losses[:6]) + (", ..." if len(bad_losses) > 6 else "")
    lines.append(f"The smallest that diverged, lr = {sig(bad.lr)}, was stopped by the guard at step "
                 f"{int(bad.diverged_at_step)}; its training loss per step: {steps}.")
    converged = scan[scan.outcome.isin(CONVERGED)]
    best = converged.loc[converged.val_loss.idxmin()] if converged.val_loss.notna().any() else None
    if best is not None and best.lr != good.lr:
        lines.append(f"The best scanned rate was lr = {sig(best.lr)} (validation log loss {sig(best.val_loss)}): the "
                     "largest rate that still converges is not the best one.")
    if sweep_result.gd_threshold and math.isfinite(sweep_result.gd_threshold):
        t = sweep_result.gd_threshold
        lines.append(f"Plain gradient descent on a quadratic with the initial curvature (lambda_max = "
                     f"{sig(sweep_result.sharpness)}) is stable up to 2/lambda_max = {sig(t)}; the observed boundary "
                     f"lies between {sig(good.lr / t)}x and {sig(bad.lr / t)}x that threshold.")
    return lines


def explain_generic(pitfall: RunResult, healthy: RunResult) -> list[str]:
    """For presets without their own explanation: what differs in the headline metrics."""
    lines = [f"Outcome: pitfall {pitfall.outcome}, healthy {healthy.outcome}."]
    for key in ("val/log_loss", "val/auroc", "val/ece"):
        a, b = pitfall.metrics.get(key, math.nan), healthy.metrics.get(key, math.nan)
        lines.append(f"{key}: {sig(a)} (pitfall) vs {sig(b)} (healthy).")
    return lines


EXPLAIN: dict[str, Callable[[RunResult, RunResult], list[str]]] = {
    "no_zero_grad": explain_no_zero_grad,
    "loss_only": explain_loss_only,
}
