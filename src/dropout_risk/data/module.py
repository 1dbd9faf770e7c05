"""The LightningDataModule: stratified split, standardisation fitted on train only (both in
data/split.py, torch-free), and batches sliced from in-memory tensors.

Why not DataLoader(TensorDataset)? It collates sample by sample: 20k rows x 20 epochs costs
~2 s more than slicing (measured, benchmarks/README.md). `InMemoryBatches` yields pre-sliced
(x, y) tensors with a fresh, seeded permutation each epoch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig

from dropout_risk.data.base import TabularData
from dropout_risk.data.split import split_fingerprint, split_indices, standardise

__all__ = ["InMemoryBatches", "StudentDataModule", "split_fingerprint", "split_indices"]


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


class StudentDataModule(pl.LightningDataModule):
    def __init__(self, data: TabularData, cfg: DictConfig, seed: int, shuffle_seed: int | None = None) -> None:
        super().__init__()
        self.data, self.cfg, self.seed = data, cfg, seed
        self.shuffle_seed = seed if shuffle_seed is None else shuffle_seed  # trainer.seed: data order only
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
        prepared = standardise(self.data, self.cfg, self.seed)
        self.splits, self.feature_names = prepared.splits, prepared.feature_names
        self.dropped_levels, self.mean, self.std = prepared.dropped_levels, prepared.mean, prepared.std
        y = self.data.y
        for name, idx in self.splits.items():
            self.tensors[name] = (torch.from_numpy(prepared.x[idx]), torch.from_numpy(y[idx].astype(np.float32)))
        if not self.data.notes_shown:  # once per data set, once it passed every check
            for note in self.data.notes:
                print(note, file=sys.stderr)
            self.data.notes_shown = True

    def fingerprint(self) -> dict:
        return {**self.data.fingerprint, "split": split_fingerprint(self.splits)}

    def train_dataloader(self) -> InMemoryBatches:
        x, y = self.tensors["train"]
        return InMemoryBatches(x, y, self.cfg.batch_size, shuffle=True, seed=self.shuffle_seed)

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
