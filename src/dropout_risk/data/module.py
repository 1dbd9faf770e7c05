"""The LightningDataModule: stratified split, standardisation fitted on train only, and
batches sliced from in-memory tensors.

Why not DataLoader(TensorDataset)? It collates sample by sample: 20k rows x 20 epochs costs
~2 s more than slicing (measured, benchmarks/README.md). `InMemoryBatches` yields pre-sliced
(x, y) tensors with a fresh, seeded permutation each epoch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig
from sklearn.model_selection import StratifiedKFold, train_test_split

from dropout_risk.data.base import DataError, TabularData


class InMemoryBatches:
    """Re-iterable batches of in-memory tensors. shuffle=True: new permutation each pass."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0):
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
            x, y = self.x[order], self.y[order]
        else:
            x, y = self.x, self.y
        for start in range(0, n, self.batch_size):
            yield x[start : start + self.batch_size], y[start : start + self.batch_size]


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


class StudentDataModule(pl.LightningDataModule):
    def __init__(self, data: TabularData, cfg: DictConfig, seed: int) -> None:
        super().__init__()
        self.data, self.cfg, self.seed = data, cfg, seed
        self.splits: dict[str, np.ndarray] = {}
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.feature_names: list[str] = []
        self.dropped_levels: list[str] = []
        self.setup()

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        y = self.data.y
        counts = np.bincount(y, minlength=2)
        if counts.min() < 10:
            raise DataError(
                f"{self.data.name}: only {counts.min()} rows of one class; a stratified split needs "
                "at least 10 of each: check data.target / data.positive"
            )
        self.splits = split_indices(y, self.cfg.val_frac, self.cfg.test_frac, self.seed,
                                    self.cfg.get("cv_folds", 0), self.cfg.get("cv_fold"))
        features = self.data.features
        train_std = features.iloc[self.splits["train"]].std(axis=0, ddof=0)
        # A one-hot level that no training student has carries nothing: drop it. A raw feature
        # that is constant is a data problem the user should see.
        onehot = set(self.data.onehot)
        empty_levels = [c for c in features.columns if c in onehot and train_std[c] == 0]
        self.dropped_levels = empty_levels
        if empty_levels:
            features = features.drop(columns=empty_levels)
        self.feature_names = list(features.columns)
        x = features.to_numpy(dtype=np.float64)
        train_x = x[self.splits["train"]]
        # Standardisation statistics from the training split only (no peeking at val/test).
        self.mean = train_x.mean(axis=0)
        self.std = train_x.std(axis=0)
        constant = [c for c, s in zip(self.feature_names, self.std, strict=True) if s == 0]
        # One-hot indicators stay 0/1, as in scikit-learn's usual pipeline: standardised, a level
        # 1 student in 120 has would become x = 11 and dominate the first layer's input.
        is_onehot = np.array([c in onehot for c in self.feature_names], dtype=bool)
        self.mean[is_onehot], self.std[is_onehot] = 0.0, 1.0
        if constant:
            raise DataError(
                f"{self.data.name}: feature(s) {', '.join(constant[:5])} are constant in the training "
                "split and carry no information: drop them with data.drop_columns=[...]"
            )
        for name, idx in self.splits.items():
            xs = torch.from_numpy((x[idx] - self.mean) / self.std).float()
            self.tensors[name] = (xs, torch.from_numpy(y[idx].astype(np.float32)))

    def fingerprint(self) -> dict:
        return {**self.data.fingerprint, "split": split_fingerprint(self.splits)}

    def train_dataloader(self) -> InMemoryBatches:
        x, y = self.tensors["train"]
        return InMemoryBatches(x, y, self.cfg.batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> InMemoryBatches:
        x, y = self.tensors["val"]  # one full batch: validation is a single forward pass
        return InMemoryBatches(x, y, max(len(x), 1), shuffle=False)

    def test_dataloader(self) -> InMemoryBatches:
        x, y = self.tensors["test"]
        return InMemoryBatches(x, y, max(len(x), 1), shuffle=False)

    def p_true(self, split: str) -> np.ndarray | None:
        if self.data.p_true is None:
            return None
        return self.data.p_true[self.splits[split]]
