"""Trained runs with their pyfunc model, made once per test module: a cohort run and a run on a
small CSV with a text category. (report.py logs the pyfunc model once wired; these tests stay
independent of that wiring: the model is rebuilt from the run's model/model.pt and logged into the
same run by log_pyfunc_from_run, which calls log_pyfunc_model.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CONF, TINY
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient


@dataclass
class Trained:
    cfg: object
    run_id: str
    uri: str  # the pyfunc model's runs:/ URI
    test_rows: pd.DataFrame  # the run's own test students as raw columns (the target too, when the file has one)
    test_logit: np.ndarray  # the run's logged predictions/predictions.npz test_logit
    temperature: float | None
    store: dict


def compose_cfg(store: dict, *overrides: str, config: str = "config"):
    base = [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config, overrides=[*TINY, "baselines=none", *base, *overrides])


def predict_request(store: dict, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("predict", overrides=[f"tracking.uri={store['uri']}", *overrides])


def train_with_pyfunc(cfg, tmp: Path, raw_frame: pd.DataFrame | None = None, register_as: str | None = None) -> Trained:
    """train(cfg), then its pyfunc model logged into the same run, rebuilt from the run's config
    and model/model.pt (log_pyfunc_from_run: what a sweep does for its best trial)."""
    from dropout_risk.data.loaders import load_data
    from dropout_risk.data.module import StudentDataModule
    from dropout_risk.model.export import log_pyfunc_from_run
    from dropout_risk.tracking.names import PREDICTIONS_ARTIFACT
    from dropout_risk.tracking.run import Run
    from dropout_risk.training.train import train

    result = train(cfg)
    client = MlflowClient(cfg.tracking.uri)
    uri = log_pyfunc_from_run(Run(client, result.run_id, claim=False), register_as)
    temperature = result.metrics.get("temperature")
    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    pred = np.load(client.download_artifacts(result.run_id, PREDICTIONS_ARTIFACT, str(tmp)))
    # the test students as raw columns: the rows of the split in the frame the loader read
    raw = dm.data.features if raw_frame is None else raw_frame
    test_rows = raw.iloc[dm.splits["test"]].reset_index(drop=True)
    store = {"uri": str(cfg.tracking.uri), "artifacts": str(cfg.tracking.artifact_location)}
    return Trained(cfg, result.run_id, uri, test_rows, pred["test_logit"], temperature, store)


def write_students_csv(path: Path, n: int = 1200, seed: int = 0) -> Path:
    """The cohort's columns plus a text category `programme`, and the label `status`."""
    from dropout_risk.data.cohort import generate_cohort

    data = generate_cohort(n, seed)
    rng = np.random.default_rng(seed)
    frame = data.features.copy()
    frame.insert(2, "programme", rng.choice(["arts", "law", "science"], size=n))
    frame["status"] = np.where(data.y == 1, "dropped", "stayed")
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory, new_store) -> Trained:
    root = tmp_path_factory.mktemp("predict-cohort")
    store = new_store(root / "mlruns")
    return train_with_pyfunc(compose_cfg(store), root)


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory, new_store) -> Trained:
    from dropout_risk.data.csv_read import read_frame

    root = tmp_path_factory.mktemp("predict-csv")
    store = new_store(root / "mlruns")
    path = write_students_csv(root / "students.csv")
    cfg = compose_cfg(store, "data=csv", f"data.path={path}", "data.target=status", "data.positive=dropped")
    return train_with_pyfunc(cfg, root, raw_frame=read_frame(path, None)[0])
