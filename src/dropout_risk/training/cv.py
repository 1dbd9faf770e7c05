"""Stratified K-fold cross-validation: one parent run, each fold a child run made by train().

On a small file one split's ~100 test students say little; K folds test every student once. Each
fold is an ordinary run (early stopping, baselines, intervals) with `data.cv_fold=k`, so any fold
can be reproduced alone from its config. The parent logs, for every metric all folds have, the
mean over folds under the metric's own name and the sample standard deviation as `<name>_sd`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dropout_risk.config.validate import validate
from dropout_risk.data.loaders import load_data
from dropout_risk.data.split import standardise
from dropout_risk.model.baselines import check_baselines
from dropout_risk.tracking.names import run_name
from dropout_risk.tracking.provenance import provenance_tags
from dropout_risk.tracking.run import Run
from dropout_risk.tracking.store import check_tracking
from dropout_risk.training.train import RunResult, train


@dataclass
class CVResult:
    run_id: str  # the parent run
    run_name: str
    experiment_id: str
    folds: list[RunResult]
    mean: dict[str, float]
    sd: dict[str, float]


def fold_config(cfg: DictConfig, fold: int, parent_name: str) -> DictConfig:
    """The fold's config: its test fold, and a name that says which fold of which CV it is."""
    fcfg = copy.deepcopy(cfg)
    OmegaConf.update(fcfg, "data.cv_fold", fold)
    OmegaConf.update(fcfg, "tracking.run_name", f"{parent_name}-fold{fold}")
    return fcfg


def aggregate(results: list[RunResult]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample sd (ddof=1) over folds of every metric that every fold logged."""
    keys = [k for k in results[0].metrics if all(k in r.metrics for r in results)]
    values = {k: np.array([r.metrics[k] for r in results], dtype=np.float64) for k in keys}
    return ({k: float(np.mean(v)) for k, v in values.items()},
            {k: float(np.std(v, ddof=1)) for k, v in values.items()})


def cross_validate(cfg: DictConfig, overrides: list[str] | None = None) -> CVResult:
    """Train `data.cv_folds` folds under one parent run. Bad config or data (e.g. fewer students
    of a class than folds) raises before any run exists."""
    validate(cfg)
    check_tracking(cfg.tracking.uri)
    k = cfg.data.cv_folds
    data = load_data(cfg.data, cfg.seed)
    check_baselines(cfg)
    name = f"cv{k}-{run_name(cfg)}"
    for fold in range(k):  # every fold's split and standardisation works, before the parent run exists
        standardise(data, fold_config(cfg, fold, name).data, cfg.seed)
    parent = Run.start(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location, name,
                       tags={"cv_folds": str(k), "seed": str(cfg.seed), "data": data.name,
                             "mlflow.experimentKind": "custom_model_development", **provenance_tags()})
    with parent.failing_on_error({"outcome": "failed"}):
        parent.log_config(cfg, overrides or [])
        results = []
        for fold in range(k):
            fcfg = fold_config(cfg, fold, name)
            results.append(train(fcfg, parent_run_id=parent.run_id,
                                 tags={"cv_fold": str(fold), "cv_parent": parent.run_id},
                                 overrides=[*(overrides or []), f"data.cv_fold={fold}",
                                            f"tracking.run_name={fcfg.tracking.run_name}"]))
        mean, sd = aggregate(results)
        parent.log_metrics({**mean, **{f"{key}_sd": v for key, v in sd.items()}}, step=0)
        outcomes = sorted({r.outcome for r in results})
        parent.set_tags({"outcome": outcomes[0] if len(outcomes) == 1 else "mixed",
                         "cv_fold_runs": ",".join(r.run_id for r in results)})
        parent.end("FINISHED")
    return CVResult(parent.run_id, name, parent.experiment_id, results, mean, sd)
