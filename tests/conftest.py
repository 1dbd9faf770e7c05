"""Fixtures shared by the tests: compose the real config once per test with small sizes, and
a real MLflow store (SQLite + artifacts) in a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from dropout_risk.config.schema import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else "python"

register_configs()

# What every test run shrinks: a small cohort, few epochs.
TINY = ["data.n_students=1200", "trainer.max_epochs=3", "data.batch_size=128", "model.hidden=[16,8]"]


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


def run_pipeline(script: str, *args: str, cwd: Path, timeout: float = 300):
    """Run a pipeline script as a user would; returns the CompletedProcess."""
    import subprocess

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([PYTHON, str(ROOT / "pipelines" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def chromium_path() -> str:
    """Debian's chromium for the browser checks: skipped with a reason when it is missing, a
    failure when DROPOUT_RISK_REQUIRE_SERVICES=1 (as in .ci/run)."""
    import shutil

    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        reason = "chromium is not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("DROPOUT_RISK_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}, and DROPOUT_RISK_REQUIRE_SERVICES=1 requires the browser check")
        pytest.skip(reason)
    return path
