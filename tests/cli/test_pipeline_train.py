"""pipelines/train.py as a user runs it: exit codes, printed lines, one-line errors, and
nothing left RUNNING."""

from __future__ import annotations

import re

import pytest
from helpers import TINY, UCI_DROPOUT_CSV, run_pipeline, shared_file, write_csv
from mlflow import MlflowClient


def _store_args(tmp_path):
    return [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_location={tmp_path}/artifacts"]


def test_train_script_end_to_end(tmp_path):
    proc = run_pipeline("train.py", "optim=sgd", "optim.lr=0.3", "model.hidden=[16,8]", *TINY[:1],
                        "trainer.max_epochs=3", *_store_args(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    run_id = re.search(r"^run_id: ([0-9a-f]{32})$", out, re.M).group(1)
    assert re.search(r"^auroc\s+0\.\d{4}\s+0\.\d{4}$", out, re.M)  # the summary table
    assert "mlflow ui --backend-store-uri sqlite:///" in out and "--host 127.0.0.1" in out
    assert "workflowType=machine_learning" in out
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "sgd-lr0.3-h16x8-s0"
    assert run.data.tags["outcome"] == "converged"
    assert "optim=sgd" in run.data.tags["command"]
    assert not (tmp_path / "outputs").exists()  # Hydra writes no output folders


@pytest.mark.parametrize(
    "args, needle",
    [
        (["optim.learning_rate=1"], "unknown config key 'optim.learning_rate'"),
        (["optim=adam"], "optim=adam is not an option: choose one of adamw, sgd"),
        (["trainer.max_epochs=ten"], "trainer.max_epochs"),
        (["optim.lr=-1"], "optim.lr=-1.0 must be > 0"),
        (["data=csv", "data.path=/no/such.csv", "data.target=y", "data.positive=1"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_run(tmp_path, args, needle):
    proc = run_pipeline("train.py", *args, *_store_args(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0]
    if (tmp_path / "mlflow.db").exists():
        client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_uci_file_trains(tmp_path):
    path = shared_file(UCI_DROPOUT_CSV)
    proc = run_pipeline("train.py", "data=uci_dropout", f"data.path={path}", "data.early_warning=true",
                        "trainer.max_epochs=3", *_store_args(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "outcome: converged" in proc.stdout


def test_constant_feature_in_csv_is_refused(tmp_path):
    rows = "\n".join(f"{i % 7},{5},{i % 2}" for i in range(200))
    path = write_csv(tmp_path, "a,b,label\n" + rows + "\n")
    proc = run_pipeline("train.py", "data=csv", f"data.path={path}", "data.target=label", "data.positive=1",
                        *_store_args(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "constant" in proc.stderr and "data.drop_columns" in proc.stderr
