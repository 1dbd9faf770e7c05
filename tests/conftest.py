"""Fixtures shared by the tests: compose the real config once per test with small sizes, and
a real MLflow store (SQLite + artifacts) in a temp folder. Plain helpers (paths, TINY,
run_pipeline, ...) live in helpers.py."""

from __future__ import annotations

import pytest
from helpers import CONF, TINY
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from dropout_risk.config.schema import register_configs

register_configs()


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> dict[str, str]:
    """One real MLflow store for the session (creating its tables costs seconds)."""
    root = tmp_path_factory.mktemp("mlruns")
    return {"uri": f"sqlite:///{root}/mlflow.db", "artifacts": str(root / "artifacts"), "root": str(root)}


@pytest.fixture
def client(store) -> MlflowClient:
    return MlflowClient(tracking_uri=store["uri"])


@pytest.fixture
def make_cfg(store):
    """make_cfg("optim=sgd", ...) -> the composed config, tiny, writing to the temp store."""

    def _make(*overrides: str, tiny: bool = True, config: str = "config"):
        base = [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}"]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config, overrides=[*(TINY if tiny else []), *base, *overrides])

    return _make
