"""A sweep's baselines: fitted once, on the parent run, not once per trial.

Every trial trains on the same data and split (one seed), so the baselines are the same for all
of them: the coordinator fits them once and logs `baseline/<name>/<split>/<metric>` on the parent.
At the report the best trial (lowest validation log loss) gets what a single run gets: 95%
intervals on its headline test metrics and the paired-bootstrap verdict against the best
baseline, computed from the trial's logged predictions (`best/test/...`, `vs_baseline/test/...`).
"""

from __future__ import annotations

import io

import numpy as np
from omegaconf import DictConfig

from dropout_risk.model.baselines import Baseline, check_baselines, fit_baselines
from dropout_risk.tracking.names import PREDICTIONS_ARTIFACT
from dropout_risk.tracking.run import Run


def fit_sweep_baselines(cfg: DictConfig, run: Run) -> tuple[list[Baseline], dict[str, np.ndarray]]:
    """Fit the configured baselines on the sweep's split and log their metrics on the parent run.
    Returns them and the val/test labels."""
    from dropout_risk.data.loaders import load_data
    from dropout_risk.data.module import StudentDataModule
    from dropout_risk.training.comparison import baseline_metrics

    check_baselines(cfg)
    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    baselines = fit_baselines(cfg, dm.tensors, cfg.seed)
    y = {split: dm.tensors[split][1].numpy().astype(np.int64) for split in ("val", "test")}
    if baselines:
        run.log_metrics(baseline_metrics(baselines, y, {split: dm.p_true(split) for split in y}), flush=True)
    return baselines, y


def best_trial_versus_baselines(cfg: DictConfig, run: Run, best_run, baselines: list[Baseline],
                                y: dict[str, np.ndarray]) -> str | None:
    """The best trial's test intervals and its verdict against the best baseline, logged on the
    parent; returns the verdict line (None without baselines or predictions)."""
    from dropout_risk.analysis.calibration import sigmoid
    from dropout_risk.tracking.query import artifact_bytes
    from dropout_risk.training.comparison import interval_metrics, versus_best_baseline

    raw = artifact_bytes(best_run.info.artifact_uri, PREDICTIONS_ARTIFACT, run.client.tracking_uri)
    n = cfg.baselines.n_resamples
    if raw is None or n == 0:
        return None
    pred = np.load(io.BytesIO(raw))
    if not np.array_equal(pred["test_y"].astype(np.int64), y["test"]):  # a trial on other rows: not comparable
        return None
    p_test = sigmoid(pred["test_logit"].astype(np.float64))
    metrics = {f"best/{k}": v for k, v in interval_metrics(y["test"], p_test, n, cfg.seed).items()}
    versus, versus_metrics = versus_best_baseline(baselines, y, p_test, n, cfg.seed)
    metrics.update(versus_metrics)
    run.log_metrics(metrics, flush=True)
    if versus is None:
        return None
    run.set_tags({"best_baseline": versus.baseline})
    return versus.line().replace("MLP - ", "best trial - ", 1)
