"""The seed's pitfalls as runnable experiments (conf/experiment/pitfall_*.yaml).

A train preset trains the pitfall run and then its healthy counterpart (the same config with
`pitfall.counterpart` applied: same seed, data and initialisation); the sweep preset finds both
among its scan trials (the smallest learning rate that diverged, the largest that converged
below it). Either way the two runs are linked (tag `counterpart` = the other run's id, `pitfall`,
`pitfall_role`), compared side by side with `compare.compare` (reliability grid, loss curves,
table, logged as a comparison run) and explained from their numbers: the printed text is
computed from the runs, never canned.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from dropout_risk.compare import Comparison, compare
from dropout_risk.errors import ConfigError
from dropout_risk.tracking import resolve_uri
from dropout_risk.train import RunResult, run_name, train

KEY_METRICS = ("val/log_loss", "val/auroc", "val/ece", "val/brier", "val/log_loss_calibrated", "val/ece_calibrated",
               "test/log_loss", "test/auroc", "train/loss_epoch", "epochs_completed")


@dataclass
class PitfallResult:
    name: str
    pitfall_run_id: str
    healthy_run_id: str
    comparison: Comparison
    explanation: list[str]


def counterpart_config(cfg: DictConfig, pitfall: RunResult) -> tuple[DictConfig, list[str]]:
    """The healthy counterpart's config: `cfg` with `pitfall.counterpart` applied. An override
    may name `{best_val_epoch}`, the pitfall run's epoch of lowest validation loss."""
    best_epoch = best_val_epoch(pitfall)
    overrides = [str(o).format(best_val_epoch=best_epoch) for o in cfg.pitfall.counterpart]
    healthy = copy.deepcopy(cfg)  # keeps the structured schema: a typo'd key or a wrong type fails
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_delete() or override.is_add() or not override.key_or_group or "/" in override.key_or_group:
            raise ConfigError(f"pitfall.counterpart: {override.input_line!r} must be a plain key=value override")
        OmegaConf.update(healthy, override.key_or_group, override.value(), merge=False)
    return healthy, overrides


def best_val_epoch(result: RunResult) -> int:
    """1-based epoch of the lowest validation log loss (the last epoch when none is finite)."""
    losses = np.array([h.get("val/log_loss", math.nan) for h in result.val_history], dtype=float)
    if not np.isfinite(losses).any():
        return max(len(losses), 1)
    return int(np.nanargmin(losses)) + 1


def run_train_pitfall(cfg: DictConfig, overrides: Sequence[str] = (), echo: Callable[[str], None] = print,
                      out_dir: str | Path | None = None) -> PitfallResult:
    """Train the pitfall run and its healthy counterpart, link, compare and explain them."""
    name = str(cfg.pitfall.name)
    # Each run is trained with pitfall.name=null in its saved config: re-running that config file
    # reproduces that one run, not the pair (the tags say which pitfall it belongs to).
    single = copy.deepcopy(cfg)
    single.pitfall.name = None
    if not cfg.tracking.run_name:
        single.tracking.run_name = f"{name}-pitfall-{run_name(cfg)}"
    echo(f"pitfall {name}: training the pitfall run")
    pitfall = train(single, overrides=list(overrides), tags={"pitfall": name, "pitfall_role": "pitfall"})
    healthy_cfg, extra = counterpart_config(single, pitfall)
    if not cfg.tracking.run_name:
        healthy_cfg.tracking.run_name = None  # named from its own config, not the pitfall run's name
        healthy_cfg.tracking.run_name = f"{name}-healthy-{run_name(healthy_cfg)}"
    echo(f"pitfall {name}: training the healthy counterpart ({' '.join(extra)})")
    healthy = train(healthy_cfg, overrides=[*overrides, *extra], tags={"pitfall": name, "pitfall_role": "healthy"})
    explanation = EXPLAIN.get(name, explain_generic)(pitfall, healthy)
    client = MlflowClient(resolve_uri(cfg.tracking.uri))
    for result in (pitfall, healthy):  # where validation said to stop, as metrics the UI can sort by
        epoch = best_val_epoch(result)
        client.log_metric(result.run_id, "best_val_epoch", epoch)
        client.log_metric(result.run_id, "val/log_loss_best", result.val_history[epoch - 1]["val/log_loss"]
                          if result.val_history else math.nan)
    return _link_and_compare(cfg, name, pitfall.run_id, healthy.run_id, explanation, out_dir)


def run_sweep_pitfall(cfg: DictConfig, sweep_result, out_dir: str | Path | None = None) -> PitfallResult:
    """The sweep preset: the smallest scanned learning rate that diverged is the pitfall run, the
    largest that converged below it the healthy counterpart."""
    scan = sweep_result.summary[sweep_result.summary.phase == "scan"].sort_values("lr")
    diverged = scan[scan.outcome == "diverged"]
    if diverged.empty:
        raise ConfigError(f"pitfall {cfg.pitfall.name}: no scanned learning rate diverged; widen the range, "
                          "e.g. sweep.lr_max=1000")
    bad = diverged.iloc[0]
    below = scan[(scan.outcome == "converged") & (scan.lr < bad.lr)]
    if below.empty:
        raise ConfigError(f"pitfall {cfg.pitfall.name}: no learning rate below {bad.lr:.3g} converged; lower the "
                          "range, e.g. sweep.lr_min=1e-4")
    good = below.iloc[-1]
    history = MlflowClient(resolve_uri(cfg.tracking.uri)).get_metric_history(str(bad.run_id), "train/loss")
    losses = [m.value for m in sorted(history, key=lambda m: m.step)]
    explanation = explain_lr_divergence(sweep_result, bad, good, scan, losses)
    return _link_and_compare(cfg, str(cfg.pitfall.name), str(bad.run_id), str(good.run_id), explanation, out_dir)


def _link_and_compare(cfg: DictConfig, name: str, pitfall_id: str, healthy_id: str, explanation: list[str],
                      out_dir: str | Path | None) -> PitfallResult:
    client = MlflowClient(resolve_uri(cfg.tracking.uri))
    for run_id, other, role in ((pitfall_id, healthy_id, "pitfall"), (healthy_id, pitfall_id, "healthy")):
        client.set_tag(run_id, "counterpart", other)
        client.set_tag(run_id, "pitfall", name)
        client.set_tag(run_id, "pitfall_role", role)
    out_dir = out_dir or cfg.pitfall.out_dir or f"compare_out/pitfall-{name}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    comparison = compare(runs=[pitfall_id, healthy_id], tracking_uri=cfg.tracking.uri, out_dir=out_dir,
                         artifact_location=cfg.tracking.artifact_location)
    text = f"# Pitfall: {name}\n\n" + "\n".join(f"- {line}" for line in explanation) + "\n"
    (comparison.out_dir / "explanation.md").write_text(text)
    client.log_text(pitfall_id, text, "pitfall/explanation.md")
    if comparison.comparison_run_id:
        client.log_text(comparison.comparison_run_id, text, "explanation.md")
        client.set_tag(comparison.comparison_run_id, "pitfall", name)
    return PitfallResult(name, pitfall_id, healthy_id, comparison, explanation)


def key_table(result: PitfallResult) -> str:
    """The headline metrics of the two runs, one column each."""
    frame = result.comparison.table.set_index("run_id")
    rows = [k for k in KEY_METRICS if k in frame.columns]
    table = frame.loc[[result.pitfall_run_id, result.healthy_run_id], ["outcome", *rows]].T
    table.columns = ["pitfall", "healthy"]
    return table.to_string(float_format=lambda v: f"{v:.4g}")


# --- explanations, computed from the runs ---------------------------------------------------------


def _g(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)


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
            f"used grew from {_g(g_bad[0])} at step 1 to {_g(np.nanmax(g_bad))} at its largest "
            f"({_g(np.nanmax(g_bad) / g_bad[0])}x), while with zero_grad it peaked at {_g(np.nanmax(g_good))} "
            f"and ended at {_g(g_good[-1])}.")
    if pitfall.outcome == "diverged":
        lines.append(f"The divergence guard stopped the pitfall run at step {pitfall.diverged_at_step}; the same "
                     f"learning rate with zero_grad {healthy.outcome}.")
    tb, th = _epoch_means(pitfall.train_loss, len(pitfall.val_history)), _epoch_means(
        healthy.train_loss, len(healthy.val_history))
    if tb.size > 1:
        ups = int(np.sum(np.diff(tb) > 0))
        lines.append(f"Its training loss per epoch went up in {ups} of {tb.size - 1} epochs (healthy: "
                     f"{int(np.sum(np.diff(th) > 0))} of {max(th.size - 1, 0)}) and ended at {_g(tb[-1])} "
                     f"against {_g(th[-1])}.")
    m, h = pitfall.metrics, healthy.metrics
    lines.append(f"On validation: log loss {_g(m['val/log_loss'])} vs {_g(h['val/log_loss'])}, AUROC "
                 f"{_g(m['val/auroc'])} vs {_g(h['val/auroc'])} (0.5 is chance), ECE {_g(m['val/ece'])} vs "
                 f"{_g(h['val/ece'])}.")
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
        f"Training loss fell from {_g(train_epochs[0])} to {_g(train_epochs[-1])} over {n} epochs (lower than the "
        f"epoch before in {falling} of {n - 1}): watched alone, it looks like steady progress.",
        f"Validation log loss was lowest at epoch {best} ({_g(val[best - 1])}) and then rose to {_g(val[-1])} at "
        f"epoch {n} ({_signed_pct(val[-1], val[best - 1])}); ECE went from {_g(ece[best - 1])} to {_g(ece[-1])}.",
        _temperature_line(m, val[-1], val[best - 1]),
        f"The healthy counterpart stops at epoch {best}, where validation said to: test log loss "
        f"{_g(h['test/log_loss'])} vs {_g(m['test/log_loss'])}, test ECE {_g(h['test/ece'])} vs {_g(m['test/ece'])}, "
        f"test AUROC {_g(h['test/auroc'])} vs {_g(m['test/auroc'])}.",
    ]
    return lines


def _temperature_line(m: dict[str, float], last: float, best: float) -> str:
    t = m["temperature"]
    line = (f"Temperature scaling of the final model (T = {_g(t)} {'>' if t > 1 else '<'} 1, fitted on validation: "
            f"it was {'over' if t > 1 else 'under'}confident) brings validation log loss from {_g(m['val/log_loss'])} "
            f"to {_g(m['val/log_loss_calibrated'])} and ECE from {_g(m['val/ece'])} to {_g(m['val/ece_calibrated'])}")
    if not last > best:
        return line + "."
    share = _recovered(last, m["val/log_loss_calibrated"], best)
    verdict = ("most of the rise was overconfidence, which one temperature undoes" if share >= 0.5 else
               "most of it is not a matter of confidence: the model also ranks students worse")
    return line + f": it takes back {_g(100 * share)}% of the rise in validation log loss; {verdict}."


def explain_lr_divergence(sweep_result, bad, good, scan, bad_losses: Sequence[float]) -> list[str]:
    """`bad`, `good`: summary rows of the diverged and converged trials; `bad_losses`: the diverged
    trial's training loss per step."""
    n_div = int((scan.outcome == "diverged").sum())
    n_conv = int((scan.outcome == "converged").sum())
    lines = [
        f"Scanned {len(scan)} learning rates from {_g(scan.lr.min())} to {_g(scan.lr.max())}: {n_conv} converged, "
        f"{n_div} diverged.",
        f"The largest that converged, lr = {_g(good.lr)}, reached validation log loss {_g(good.val_loss)} "
        f"(AUROC {_g(good.auroc)}, ECE {_g(good.ece)}).",
    ]
    steps = ", ".join(_g(v) for v in bad_losses[:6]) + (", ..." if len(bad_losses) > 6 else "")
    lines.append(f"The smallest that diverged, lr = {_g(bad.lr)}, was stopped by the guard at step "
                 f"{int(bad.diverged_at_step)}; its training loss per step: {steps}.")
    converged = scan[scan.outcome == "converged"]
    best = converged.loc[converged.val_loss.idxmin()] if converged.val_loss.notna().any() else None
    if best is not None and best.lr != good.lr:
        lines.append(f"The best scanned rate was lr = {_g(best.lr)} (validation log loss {_g(best.val_loss)}): the "
                     "largest rate that still converges is not the best one.")
    if sweep_result.gd_threshold and math.isfinite(sweep_result.gd_threshold):
        t = sweep_result.gd_threshold
        lines.append(f"Plain gradient descent on a quadratic with the initial curvature (lambda_max = "
                     f"{_g(sweep_result.sharpness)}) is stable up to 2/lambda_max = {_g(t)}; the observed boundary "
                     f"lies between {_g(good.lr / t)}x and {_g(bad.lr / t)}x that threshold.")
    return lines


def explain_generic(pitfall: RunResult, healthy: RunResult) -> list[str]:
    """For presets without their own explanation: what differs in the headline metrics."""
    lines = [f"Outcome: pitfall {pitfall.outcome}, healthy {healthy.outcome}."]
    for key in ("val/log_loss", "val/auroc", "val/ece"):
        a, b = pitfall.metrics.get(key, math.nan), healthy.metrics.get(key, math.nan)
        lines.append(f"{key}: {_g(a)} (pitfall) vs {_g(b)} (healthy).")
    return lines


EXPLAIN: dict[str, Callable[[RunResult, RunResult], list[str]]] = {
    "no_zero_grad": explain_no_zero_grad,
    "loss_only": explain_loss_only,
}
