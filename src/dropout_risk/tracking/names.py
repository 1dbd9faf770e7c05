"""The tracking contract: run names, artifact paths, tag and metric names. What writes a run and
what reads it back (sweep report, compare, reproduce, pitfalls, tests) agree because both use
these. The README lists the ones users rely on (metrics, tags, artifacts)."""

from __future__ import annotations

import re

from omegaconf import DictConfig

# --- artifacts of a training run ---------------------------------------------------------------
CONFIG_ARTIFACT = "config/config.yaml"  # the resolved config, runnable by Hydra again
OVERRIDES_ARTIFACT = "config/overrides.yaml"
PREDICTIONS_ARTIFACT = "predictions/predictions.npz"  # final val/test labels and logits
MODEL_ARTIFACT = "model/model.pt"
RELIABILITY_ARTIFACT = "plots/reliability_val.png"  # the final model's validation diagram
CALIBRATION_ARTIFACT = "plots/reliability_calibration.png"  # before/after temperature scaling
FLOW_ARTIFACT = "plots/backprop_flow.png"
LAB_PAGE_ARTIFACT = "mechanism/index.html"
RELIABILITY_IMAGE_KEY = "reliability/val"  # per-epoch diagrams in the UI's image grid
LOSS_ROOT_ARTIFACT = "loss.png"  # train loss per step, val loss per epoch (the compare page's panes)
# The UI's compare-runs page lists only top-level artifact files: these figures are also logged at
# the artifact root under a short name (the same file: Run writes it once and logs it twice).
ROOT_COPIES = {RELIABILITY_ARTIFACT: "reliability.png", CALIBRATION_ARTIFACT: "calibration.png"}
# --- artifacts of a sweep's parent run ----------------------------------------------------------
DIVERGENCE_ARTIFACT = "plots/divergence.png"
DIVERGENCE_IMAGE_KEY = "divergence"
GRID_ARTIFACT = "plots/reliability_grid.png"
SUMMARY_ARTIFACT = "sweep_summary.csv"
# --- artifacts of a reproduction ---------------------------------------------------------------
REPORT_ARTIFACT = "reproduction/report.txt"

# --- run tags -------------------------------------------------------------------------------------
TAG_OUTCOME = "outcome"  # converged | catapult | diverged | pruned | failed
TAG_DIVERGED_AT_STEP = "diverged_at_step"
TAG_CATAPULT_STEP = "catapult_step"  # a catapult run: the step of its loss peak
# A catapult run's loss rose well above its start and came back (Lewkowycz et al. 2020): it
# converged, and counts as converged wherever a count needs one.
CONVERGED = ("converged", "catapult")
OUTCOMES = ("converged", "catapult", "diverged", "pruned", "failed")
TAG_ERROR = "error"
TAG_WEIGHTS = "weights_sha256"
TAG_DATA_FINGERPRINT = "data_fingerprint"
TAG_SWEEP_ID = "sweep_id"  # on a sweep's parent and every trial
TAG_TRIAL = "trial"  # the Optuna trial number
TAG_PHASE = "phase"  # scan | refine
TAG_STUDY = "study"
TAG_BEST_RUN_ID = "best_run_id"  # on a sweep's parent
TAG_REPRODUCED_FROM = "reproduced_from"
TAG_PITFALL = "pitfall"
TAG_PITFALL_ROLE = "pitfall_role"  # pitfall | healthy
TAG_HOST = "host"  # the process writing the run (tracking/process.py): host,
TAG_PID = "pid"  # pid
TAG_PID_START = "pid_start"  # and start time (Linux clock ticks after boot), against pid reuse

# --- metrics read back by other parts -----------------------------------------------------------
TRAIN_LOSS = "train/loss"  # per step
TRAIN_LOSS_EPOCH = "train/loss_epoch"
VAL_LOSS = "val/loss"  # the training loss function on the validation split
VAL_LOG_LOSS = "val/log_loss"  # what the sweep optimises and the pruner watches
LOSS_CURVES = (TRAIN_LOSS, VAL_LOSS)

# --- run names ------------------------------------------------------------------------------------
TRIAL_NAME = re.compile(r"^(scan|refine)-\d+-lr")


def optimizer_name(cfg: DictConfig) -> str:
    """The optimiser's class name ("AdamW", "SGD") from `optim._target_`."""
    return str(cfg.optim._target_).rsplit(".", 1)[-1]


def run_name(cfg: DictConfig) -> str:
    """A single run: `tracking.run_name`, else optimiser, lr, widths and seed (`adamw-lr0.001-h64x32-s0`)."""
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    hidden = "x".join(str(h) for h in cfg.model.hidden)
    return f"{optimizer_name(cfg).lower()}-lr{cfg.optim.lr:.3g}-h{hidden}-s{cfg.seed}"


def trial_run_name(phase: str, number: int, lr: float, seed: int | None = None, planned: int = 1000) -> str:
    """A sweep trial (`scan-07-lr0.0123`, with its seed when the sweep has several: `-s1`), its
    number zero-padded only to the width of the sweep's `planned` trial count (short enough for
    the runs table's name column, still sorted by name); TRIAL_NAME recognises it."""
    width = len(str(max(planned - 1, number, 0)))
    return f"{phase}-{number:0{width}d}-lr{lr:.3g}" + (f"-s{seed}" if seed is not None else "")


def outcome_run_name(name: str, outcome: str) -> str:
    """A trial's name once it ended: its outcome appended unless it converged
    (`scan-16-lr0.301-diverged`, `refine-53-lr0.002-pruned`), readable in the runs table."""
    return name if outcome in CONVERGED or name.endswith(f"-{outcome}") else f"{name}-{outcome}"


def sweep_run_name(cfg: DictConfig, lr_min: float, lr_max: float) -> str:
    """A sweep's parent run (`sweep-adamw-lr1e-04-1e+01-s0`)."""
    return f"sweep-{optimizer_name(cfg).lower()}-lr{lr_min:.0e}-{lr_max:.0e}-s{cfg.seed}"


def grid_image_stem(key: str, step: int, timestamp_ms: int) -> str:
    """The file stem MLflow's log_image(key=, step=) gives an image (images/<stem>.png and
    <stem>+compressed.webp), which the UI's image grid reads."""
    import uuid

    return f"{key.replace('/', '~')}+step+{step}+timestamp+{timestamp_ms}+{uuid.uuid4()}"
