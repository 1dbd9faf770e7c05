"""load_data(cfg.data, seed), the config's data source: each kind, one-line DataErrors for bad
files (the same errors pipelines/train.py prints as `error: ...`), and its per-process cache,
which reads an edited file again."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import write_csv
from omegaconf import OmegaConf

from dropout_risk.config.schema import DataConfig
from dropout_risk.data.base import DataError
from dropout_risk.data.loaders import load_data
from dropout_risk.data.module import StudentDataModule


def _csv_cfg(path, **extra):
    return OmegaConf.structured(DataConfig(kind="csv", path=str(path), target="y", positive="1", **extra))


def _one_line(call) -> str:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    return message


def test_cohort_is_generated_from_the_seed():
    cfg = OmegaConf.structured(DataConfig(kind="cohort", n_students=300))
    a, b = load_data(cfg, seed=11), load_data(cfg, seed=12)
    assert len(a.y) == 300 and a.fingerprint == {"generator": a.fingerprint["generator"], "n_students": 300, "seed": 11}
    assert not np.array_equal(a.features.to_numpy(), b.features.to_numpy())


def test_csv_missing_file_is_one_line(tmp_path):
    message = _one_line(lambda: load_data(_csv_cfg(tmp_path / "absent.csv"), 0))
    assert str(tmp_path / "absent.csv") in message and "no such file" in message and "data.path=" in message


def test_unknown_kind_is_one_line():
    cfg = OmegaConf.structured(DataConfig(kind="parquet"))
    assert "data.kind='parquet' is unknown" in _one_line(lambda: load_data(cfg, 0))


def test_constant_feature_is_refused_by_the_datamodule(tmp_path):
    path = write_csv(tmp_path, "a,b,y\n" + "".join(f"{i % 7},5,{i % 2}\n" for i in range(200)))
    cfg = _csv_cfg(path)
    data = load_data(cfg, 0)  # loading is fine: the column is constant, not broken
    message = _one_line(lambda: StudentDataModule(data, cfg, 0))
    assert "feature(s) b are constant" in message and "data.drop_columns" in message
    dm = StudentDataModule(load_data(_csv_cfg(path, drop_columns=["b"]), 0), _csv_cfg(path, drop_columns=["b"]), 0)
    assert dm.feature_names == ["a"]


def test_an_edited_file_is_read_again(tmp_path):
    path = write_csv(tmp_path, "a,y\n" + "".join(f"{i % 7},{i % 2}\n" for i in range(20)))
    first = load_data(_csv_cfg(path), 0)
    assert load_data(_csv_cfg(path), 0) is first  # cached
    write_csv(tmp_path, "a,y\n" + "".join(f"{i % 7},{(i + 1) % 2}\n" for i in range(20)))
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a distinct mtime on any clock
    second = load_data(_csv_cfg(path), 0)
    assert second is not first and second.y.tolist() == [1 - v for v in first.y.tolist()]
    assert second.fingerprint["sha256"] != first.fingerprint["sha256"]
