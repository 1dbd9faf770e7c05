"""scikit-learn baselines fitted on the run's own training rows and preprocessing.

A researcher's first question of an MLP on tabular data is whether a logistic regression does as
well. Each run answers it on its own split: the baselines see exactly the standardised features
the MLP trained on (the DataModule's tensors) and are scored on the same validation and test rows.
"""

from __future__ import annotations

import importlib
import inspect
import time
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dropout_risk.data.base import DataError
from dropout_risk.errors import ConfigError

# name -> (module, class); names are short because they head columns of the printed table
ESTIMATORS = {
    "logreg": ("sklearn.linear_model", "LogisticRegression"),
    "hgb": ("sklearn.ensemble", "HistGradientBoostingClassifier"),
}
BASELINE_LABELS = {"logreg": "logistic regression", "hgb": "gradient boosting"}  # in figure legends


@dataclass
class Baseline:
    name: str
    p: dict[str, np.ndarray]  # split (val, test) -> positive-class probabilities
    fit_s: float


def _estimator_class(name: str):
    module, cls = ESTIMATORS[name]
    return getattr(importlib.import_module(module), cls)


def check_baselines(cfg: DictConfig) -> None:
    """Known names and arguments their estimators accept (ConfigError: one line with the fix)."""
    models = cfg.baselines.models
    for name, kwargs in models.items():
        if name not in ESTIMATORS:
            raise ConfigError(f"baselines.models.{name} is unknown: use one of {', '.join(ESTIMATORS)} "
                              "(or baselines=none)")
        accepted = set(inspect.signature(_estimator_class(name)).parameters)
        unknown = sorted(set(kwargs or {}) - accepted)
        if unknown:
            raise ConfigError(f"baselines.models.{name}.{unknown[0]} is not an argument of "
                              f"{ESTIMATORS[name][1]}: use one of {', '.join(sorted(accepted))}")
    n = cfg.baselines.n_resamples
    if n != 0 and n < 100:
        raise ConfigError(f"baselines.n_resamples={n} must be >= 100 for a 95% interval (or 0: no intervals), "
                          "e.g. baselines.n_resamples=1000")


def fit_baselines(cfg: DictConfig, tensors: dict, seed: int) -> list[Baseline]:
    """Fit every configured baseline on `tensors["train"]`; probabilities on val and test.
    A baseline that cannot be fitted raises DataError (one line), before any run exists."""
    x_train, y_train = (t.numpy() for t in tensors["train"])
    out = []
    for name, kwargs in cfg.baselines.models.items():
        args = {"random_state": seed, **OmegaConf.to_container(kwargs or OmegaConf.create({}), resolve=True)}
        t0 = time.perf_counter()
        try:
            model = _estimator_class(name)(**args).fit(x_train, y_train.astype(np.int64))
        except ValueError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"baseline {name} could not be fitted on the training split ({first}): "
                            f"fix baselines.models.{name} or skip the baselines with baselines=none") from exc
        p = {split: model.predict_proba(tensors[split][0].numpy())[:, 1].astype(np.float64) for split in ("val", "test")}
        out.append(Baseline(name, p, time.perf_counter() - t0))
    return out
