"""The in-memory DataModule: stratified, seeded split; train-only scaling; sliced batches."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf

from dropout_risk.config.schema import DataConfig
from dropout_risk.data.cohort import generate_cohort
from dropout_risk.data.module import InMemoryBatches, StudentDataModule


def _dm(seed=0, n=2000):
    return StudentDataModule(generate_cohort(n, seed), OmegaConf.structured(DataConfig(n_students=n)), seed)


def test_split_is_stratified_disjoint_and_seeded():
    dm = _dm()
    s = dm.splits
    assert len(s["train"]) + len(s["val"]) + len(s["test"]) == 2000
    assert not set(s["train"]) & set(s["val"]) and not set(s["val"]) & set(s["test"])
    rates = [dm.data.y[s[k]].mean() for k in ("train", "val", "test")]
    assert max(rates) - min(rates) < 0.02
    assert dm.fingerprint()["split"] == _dm().fingerprint()["split"]
    assert dm.fingerprint()["split"] != _dm(seed=1).fingerprint()["split"]


def test_scaling_uses_training_split_only():
    dm = _dm()
    x_train = dm.tensors["train"][0].double()
    assert torch.allclose(x_train.mean(0), torch.zeros(dm.n_features, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x_train.std(0, unbiased=False), torch.ones(dm.n_features, dtype=torch.float64), atol=1e-4)
    raw_train = dm.data.features.to_numpy()[dm.splits["train"]]
    assert np.allclose(dm.mean, raw_train.mean(0))


def test_batches_are_slices_with_fresh_permutation_each_epoch():
    x = torch.arange(10, dtype=torch.float32)[:, None]
    y = torch.arange(10, dtype=torch.float32)
    batches = InMemoryBatches(x, y, batch_size=4, shuffle=True, seed=0)
    assert len(batches) == 3
    first = [b[1].tolist() for b in batches]
    second = [b[1].tolist() for b in batches]
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10)) and first != second
    again = [b[1].tolist() for b in InMemoryBatches(x, y, 4, True, seed=0)]
    assert again == first
