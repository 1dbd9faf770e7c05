"""What a single run shows while it works (trainer.progress): one line per epoch, or Lightning's
progress bar carrying the numbers that matter (train loss, val log loss, ECE), and what the
report draws after fit. Sweeps turn it off: their trials print one line each."""

from __future__ import annotations

import math
import sys
import time

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

from dropout_risk.tracking.names import VAL_LOG_LOSS


def progress_mode(setting: str, stream=None) -> str:
    """bar | lines | none; auto: the bar on a terminal, lines when the output is a file or a pipe
    (a bar's carriage returns make a log unreadable)."""
    if setting != "auto":
        return setting
    stream = stream or sys.stdout
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


def _val_numbers(pl_module) -> dict[str, float]:
    return pl_module.val_history[-1] if pl_module.val_history else {}


class EpochLines(pl.Callback):
    """`epoch  3/20  train loss 0.5120  val log loss 0.4983  ECE 0.031  1.2 s`, printed (and
    flushed) as each epoch ends. Put it after EpochValidation and the step recorder, whose results
    of the same hook it reads."""

    def __init__(self, recorder, max_epochs: int) -> None:
        self.recorder, self.max_epochs = recorder, max_epochs
        self._seen = 0
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        new = self.recorder.losses[self._seen:]
        self._seen = len(self.recorder.losses)
        finite = [v for v in new if math.isfinite(v)]
        loss = sum(finite) / len(finite) if finite else float("nan")
        val = _val_numbers(pl_module)
        width = len(str(self.max_epochs))
        line = (f"epoch {trainer.current_epoch + 1:>{width}}/{self.max_epochs}  train loss {loss:.4f}"
                + (f"  val log loss {val[VAL_LOG_LOSS]:.4f}" if VAL_LOG_LOSS in val else "")
                + (f"  ECE {val['val/ece']:.3f}" if "val/ece" in val else "")
                + (f"  ({len(new) - len(finite)} steps not finite)" if len(finite) < len(new) else "")
                + f"  {time.perf_counter() - self._t0:.1f} s")
        print(line, flush=True)


class MetricsBar(TQDMProgressBar):
    """Lightning's bar with the last step's loss and the last epoch's val log loss and ECE."""

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        if pl_module.step_losses:
            items["loss"] = f"{float(pl_module.step_losses[-1]):.4f}"
        val = _val_numbers(pl_module)
        if VAL_LOG_LOSS in val:
            items["val_log_loss"] = f"{val[VAL_LOG_LOSS]:.4f}"
        if "val/ece" in val:
            items["ece"] = f"{val['val/ece']:.3f}"
        return items


def progress_callbacks(mode: str, recorder, max_epochs: int) -> tuple[list[pl.Callback], bool]:
    """(callbacks, enable_progress_bar) for pl.Trainer."""
    if mode == "bar":
        return [MetricsBar(refresh_rate=10)], True
    if mode == "lines":
        return [EpochLines(recorder, max_epochs)], False
    return [], False


def report_plan(cfg, epochs: int, diverged: bool) -> str:
    """What the report after fit computes and draws, in one line."""
    every = cfg.tracking.reliability_every_n_epochs
    grid = len([e for e in range(1, epochs + 1) if e % every == 0]) if every <= epochs else 0
    parts = ["val/test metrics", "baselines' intervals" if cfg.baselines.models else ""]
    if cfg.calibration.method == "temperature" and not diverged:
        parts.append("temperature scaling")
    if cfg.tracking.figures:
        parts.append(f"{grid} per-epoch reliability diagrams (drawn during fit)" if grid > 1 else "")
        parts += ["the final reliability diagram", "loss.png"]
    if cfg.calibration.figure and cfg.calibration.method == "temperature" and not diverged:
        parts.append("calibration.png")
    if cfg.mechanism.figure:
        parts.append("backprop flow")
    if cfg.mechanism.page and not diverged:
        parts.append("lab page")
    if cfg.tracking.log_model:
        parts.append("the model" + (" (MLflow pyfunc)" if cfg.tracking.log_pyfunc and not diverged else ""))
    return "report: " + ", ".join(p for p in parts if p)
