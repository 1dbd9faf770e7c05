"""README's plain-Hydra re-run of a logged config: `pipelines/train.py --config-path <absolute
folder of the run's config.yaml> --config-name config` gives the original's weights, and a folder
whose config.yaml carries hydra.callbacks is refused before Hydra runs them.

The genuine re-run starts a new process: it is the only test of that path through Hydra's main
(its defaults list naming the schema, --config-path replacing the search path), so it stays in the
fast suite. The refused folder in a new process is `slow`: tests/config/test_safety.py checks the
same refusal in process through preflight, which the script calls before Hydra."""

from __future__ import annotations

import re

import pytest
import yaml
from helpers import CONF, TINY, run_pipeline
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from dropout_risk.config.saved import saved_config_yaml
from dropout_risk.training.train import train


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_store) -> dict[str, str]:
    return new_store(tmp_path_factory.mktemp("plain-hydra-mlruns"))


def _compose(store, *overrides: str):
    base = [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*TINY, *base, "baselines=none", "mechanism.page=false",
                                            "mechanism.figure=false", *overrides])


@pytest.mark.slow  # a new process of pipelines/train.py (tests/cli has the fast one); preflight of --config-path runs in-process in tests/config/test_safety.py
def test_a_logged_config_re_runs_with_plain_hydra(store, tmp_path):
    original = train(_compose(store, "seed=3"))
    client = MlflowClient(store["uri"])
    folder = tmp_path / "logged"
    folder.mkdir()
    path = client.download_artifacts(original.run_id, "config/config.yaml", str(folder))
    proc = run_pipeline("train.py", "--config-path", str(folder), "--config-name", "config", cwd=tmp_path)
    assert path == str(folder / "config.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    new_id = re.search(r"^run_id: ([0-9a-f]{32})$", proc.stdout, re.M).group(1)
    assert new_id != original.run_id
    assert client.get_run(new_id).data.tags["weights_sha256"] == original.weights_sha256


@pytest.mark.slow
def test_a_folder_with_hydra_callbacks_is_refused_in_a_new_process(store, tmp_path):
    copied = tmp_path / "copied"
    data = yaml.safe_load(saved_config_yaml(_compose(store)))
    data["hydra"] = {"callbacks": {"x": {"_target_": "shutil.copyfile", "_args_": ["/etc/hostname", str(copied)]}}}
    folder = tmp_path / "received"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(data))
    before = len(MlflowClient(store["uri"]).search_runs([e.experiment_id for e in MlflowClient(store["uri"])
                                                         .search_experiments()] or ["0"]))
    proc = run_pipeline("train.py", "--config-path", str(folder), "--config-name", "config", cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: config file ") and "hydra.callbacks can run code" in lines[0]
    assert not copied.exists()
    after = len(MlflowClient(store["uri"]).search_runs([e.experiment_id for e in MlflowClient(store["uri"])
                                                        .search_experiments()] or ["0"]))
    assert after == before
