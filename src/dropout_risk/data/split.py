"""The split and the standardisation, checked, without torch: what the DataModule turns into
tensors, and what a pipeline can run before its first MLflow run to refuse data that the split
makes unusable (too few students of a class, a feature constant in the training split, a
training-split mean/std that overflows). Rows are named as "data row N", the N-th data row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig
from sklearn.model_selection import StratifiedKFold, train_test_split

from dropout_risk.data.base import DataError, TabularData


def split_indices(y: np.ndarray, val_frac: float, test_frac: float, seed: int,
                  cv_folds: int = 0, cv_fold: int | None = None) -> dict[str, np.ndarray]:
    """Stratified train/val/test row indices, determined by the seed. With `cv_folds` = K >= 2,
    test is fold `cv_fold` of a stratified K-fold partition (the K test folds cover every row
    once) and val is drawn from the other folds, about `val_frac` of all rows."""
    idx = np.arange(len(y))
    if cv_folds >= 2:
        if cv_fold is None:
            raise DataError(f"data.cv_folds={cv_folds} needs the test fold of this run: pass data.cv_fold=0..{cv_folds - 1} "
                            "(python pipelines/train.py runs every fold)")
        smallest = int(np.bincount(y, minlength=2).min())
        if smallest < cv_folds:
            raise DataError(f"data.cv_folds={cv_folds} needs at least {cv_folds} students of each class, the smaller "
                            f"class has {smallest}: use data.cv_folds={max(2, smallest)} or fewer")
        folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed).split(idx, y)
        rest, test = list(folds)[cv_fold]
        val_share = min(0.5, val_frac / (1 - 1 / cv_folds))
    else:
        rest, test = train_test_split(idx, test_size=test_frac, stratify=y, random_state=seed)
        val_share = val_frac / (1 - test_frac)
    train, val = train_test_split(rest, test_size=val_share, stratify=y[rest], random_state=seed + 1)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def split_fingerprint(splits: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        h.update(name.encode())
        h.update(np.ascontiguousarray(splits[name], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


@dataclass
class Standardised:
    """The split of `data` and its features standardised with training-split statistics."""

    splits: dict[str, np.ndarray]
    feature_names: list[str]
    dropped_levels: list[str]  # one-hot levels no training student has
    mean: np.ndarray
    std: np.ndarray
    x: np.ndarray  # float32, every row of data, finite


def standardise(data: TabularData, cfg: DictConfig, seed: int) -> Standardised:
    """Split `data` as `cfg` (data.val_frac, test_frac, cv_folds, cv_fold) says and standardise it.
    Raises DataError (one line) for data the split cannot use; no non-finite value gets through."""
    y = data.y
    counts = np.bincount(y, minlength=2)
    if counts.min() < 10:
        raise DataError(
            f"{data.name}: only {counts.min()} rows of one class; a stratified split needs "
            "at least 10 of each: check data.target / data.positive"
        )
    splits = split_indices(y, cfg.val_frac, cfg.test_frac, seed, cfg.get("cv_folds", 0), cfg.get("cv_fold"))
    features = data.features
    with np.errstate(all="ignore"):
        train_std = features.iloc[splits["train"]].std(axis=0, ddof=0)
    # A one-hot level that no training student has carries nothing: drop it. A raw feature
    # that is constant is a data problem the user should see.
    onehot = set(data.onehot)
    empty_levels = [c for c in features.columns if c in onehot and train_std[c] == 0]
    if empty_levels:
        features = features.drop(columns=empty_levels)
    names = list(features.columns)
    x = features.to_numpy(dtype=np.float64)
    _refuse_non_finite(data, names, x, "is not a finite number")
    train_x = x[splits["train"]]
    # Standardisation statistics from the training split only (no peeking at val/test), in
    # float64; an overflow is found below (the loaders refuse values large enough to cause one).
    with np.errstate(all="ignore"):
        mean = train_x.mean(axis=0)
        std = train_x.std(axis=0)
    constant = [c for c, s in zip(names, std, strict=True) if s == 0]
    # One-hot indicators stay 0/1, as in scikit-learn's usual pipeline: standardised, a level
    # 1 student in 120 has would become x = 11 and dominate the first layer's input.
    is_onehot = np.array([c in onehot for c in names], dtype=bool)
    mean[is_onehot], std[is_onehot] = 0.0, 1.0
    if constant:
        raise DataError(
            f"{data.name}: feature(s) {', '.join(constant[:5])} are constant in the training "
            f"split and carry no information: drop them with data.drop_columns=[{', '.join(map(repr, constant))}]"
        )
    # Non-finite features must never reach training (they would show up as a "diverged" loss).
    overflow = "cannot be standardised (the training split's mean/std overflow float64)"
    stats_ok = np.isfinite(mean) & np.isfinite(std)
    if not stats_ok.all():
        j = int(np.flatnonzero(~stats_ok)[0])
        _refuse(data, names, int(splits["train"][np.argmax(np.abs(train_x[:, j]))]), j, overflow)
    with np.errstate(all="ignore"):
        z = ((x - mean) / std).astype(np.float32)
    _refuse_non_finite(data, names, z, overflow)
    return Standardised(splits, names, empty_levels, mean, std, z)


def _refuse_non_finite(data: TabularData, names: list[str], x: np.ndarray, what: str) -> None:
    rows, cols = np.nonzero(~np.isfinite(x))
    if len(rows):
        _refuse(data, names, int(rows[0]), int(cols[0]), what)


def _refuse(data: TabularData, names: list[str], row: int, j: int, what: str) -> None:
    col = names[j]
    value = data.features[col].iloc[row]
    raise DataError(
        f"{data.name}: column {col!r} data row {row + 1}: value {value:g} {what}; fix or drop "
        f"the row, or drop the column with data.drop_columns=[{col!r}]"
    )
