"""What a sweep searches: the learning-rate range and grid, extra search keys, the study name."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dropout_risk.config.saved import to_container
from dropout_risk.config.validate import validate
from dropout_risk.errors import SweepError
from dropout_risk.sweep.storage import has_password
from dropout_risk.tracking.names import optimizer_name


def lr_range(cfg: DictConfig) -> tuple[float, float]:
    s = cfg.sweep
    lo = s.lr_min if s.lr_min is not None else cfg.optim.scan_range[0]
    hi = s.lr_max if s.lr_max is not None else cfg.optim.scan_range[1]
    return float(lo), float(hi)


def validate_sweep(cfg: DictConfig) -> None:
    validate(cfg)
    s = cfg.sweep
    lo, hi = lr_range(cfg)
    if not (lo > 0 and hi > 0):
        raise SweepError(f"sweep.lr_min={lo}, sweep.lr_max={hi}: learning rates must be > 0")
    if not lo < hi:
        raise SweepError(f"sweep.lr_min={lo} >= sweep.lr_max={hi}: the range is empty or inverted; "
                         "pass e.g. sweep.lr_min=1e-3 sweep.lr_max=100")
    if any(not m > 0 for m in s.lr_over_gd_threshold):
        raise SweepError(f"sweep.lr_over_gd_threshold={list(s.lr_over_gd_threshold)}: multiples of 2/lambda_max(0) "
                         "must be > 0, e.g. [1.5,2,3,4]")
    if s.n_scan < 2 and not s.lr_over_gd_threshold:
        raise SweepError(f"sweep.n_scan={s.n_scan}: a scan needs at least 2 learning rates, e.g. sweep.n_scan=24")
    if s.n_refine < 0 or s.n_workers < 1:
        raise SweepError("sweep.n_refine must be >= 0 and sweep.n_workers >= 1")
    if s.seeds < 1:
        raise SweepError(f"sweep.seeds={s.seeds}: every scanned lr needs at least one seed, e.g. sweep.seeds=3")
    if s.population_size is not None and s.population_size < 1:
        raise SweepError(f"sweep.population_size={s.population_size}: pass a size >= 1, or null for "
                         "a phase's trials / n_workers")
    if s.role not in ("auto", "coordinator", "worker", "report"):
        raise SweepError(f"sweep.role={s.role!r} is unknown: use auto (= coordinator), worker or report")
    if s.storage and has_password(s.storage):
        raise SweepError("sweep.storage contains a password: put it in the environment instead "
                         "(PGPASSWORD or ~/.pgpass for PostgreSQL) and drop it from the URL")
    if s.pruner.name not in ("median", "none"):
        raise SweepError(f"sweep.pruner.name={s.pruner.name!r} is unknown: use median or none")
    search_space(cfg)
    from dropout_risk.data.loaders import load_data
    from dropout_risk.data.split import standardise
    from dropout_risk.model.baselines import ESTIMATORS

    # data the split cannot use fails here, before the study and the parent run exist (torch-free)
    standardise(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    unknown = [name for name in cfg.baselines.models if name not in ESTIMATORS]
    if unknown:
        raise SweepError(f"baselines.models.{unknown[0]} is unknown: use one of {', '.join(ESTIMATORS)} "
                         "(or baselines=none)")


def search_space(cfg: DictConfig) -> dict[str, tuple[float, float]]:
    """sweep.search entries "key:low:high" -> {key: (low, high)}, checked."""
    space = {}
    for entry in cfg.sweep.search:
        parts = str(entry).rsplit(":", 2)
        try:
            key, low, high = parts[0], float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise SweepError(f"sweep.search entry {entry!r}: write key:low:high, e.g. "
                             "sweep.search=[optim.weight_decay:1e-5:0.1]") from None
        if not 0 < low < high:
            raise SweepError(f"sweep.search entry {entry!r}: need 0 < low < high (searched log-uniformly)")
        if not isinstance(OmegaConf.select(cfg, key), int | float) or key == "optim.lr":
            raise SweepError(f"sweep.search entry {entry!r}: {key} is no numeric config key to search over "
                             "(the learning rate is always searched)")
        space[key] = (low, high)
    return space


def lr_grid(lo: float, hi: float, n: int) -> list[float]:
    return [float(f"{v:.6g}") for v in np.geomspace(lo, hi, n)]


def scan_lrs(cfg: DictConfig, lam0: float | None = None) -> list[float]:
    """The scan's learning rates: sweep.lr_over_gd_threshold x 2/lambda_max(0) when given (`lam0`
    measured), else n_scan log-spaced over the range."""
    multiples = list(cfg.sweep.lr_over_gd_threshold)
    if multiples:
        if lam0 is None or not lam0 > 0:
            raise SweepError(f"sweep.lr_over_gd_threshold needs lambda_max(0) > 0 at initialisation, measured {lam0}; "
                             "scan a range instead (sweep.lr_over_gd_threshold=[])")
        return [float(f"{m * 2 / lam0:.6g}") for m in sorted(multiples)]
    return lr_grid(*lr_range(cfg), cfg.sweep.n_scan)


def trial_space(cfg: DictConfig) -> dict:
    """What makes two sweeps the same study: everything but tracking and the worker count."""
    base = to_container(cfg)
    for key in ("tracking", "tags"):
        base.pop(key, None)
    base["sweep"] = {k: v for k, v in base["sweep"].items()
                     if k not in ("study", "storage", "n_workers", "role", "heartbeat_s", "population",
                                  "population_size")}
    base["optim"].pop("lr", None)
    from dropout_risk.data.loaders import load_data

    fingerprint = dict(load_data(cfg.data, cfg.seed).fingerprint)
    fingerprint.pop("path", None)  # the same file may sit at another path on another machine
    base["data_fingerprint"] = fingerprint
    base["data"].pop("path", None)
    return base


def default_study_name(cfg: DictConfig) -> str:
    digest = hashlib.sha256(json.dumps(trial_space(cfg), sort_keys=True).encode()).hexdigest()[:8]
    return f"lr-{optimizer_name(cfg).lower()}-{cfg.data.kind}-{digest}"
