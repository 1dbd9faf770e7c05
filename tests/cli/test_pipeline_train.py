"""pipelines/train.py as a user runs it: exit codes, printed lines, one-line errors, and
nothing left RUNNING.

Two tests run the script in a new process, for the real process path (preflight, Hydra's main,
run_cli, the exit code): a good run end to end (fast suite) and a bad input (`slow`: a second
process of the same pipeline, ~8 s of imports). The other bad inputs run the same
functions in-process (a new process costs ~10 s of imports): configuration errors through
preflight(argv=...), which the script calls before Hydra; data errors through the script's job
(check_pipeline, train) inside run_cli, the formatter that turns them into `error: ...`, exit 2.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
from helpers import PYTHON, ROOT, TINY, UCI_DROPOUT_CSV, run_pipeline, run_statuses, shared_file, write_csv
from mlflow import MlflowClient

from dropout_risk.cli.preflight import preflight
from dropout_risk.cli.run import run_cli
from dropout_risk.config.validate import check_pipeline
from dropout_risk.training.train import train


def _store_args(store):
    return [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}"]


def _run_count(client: MlflowClient) -> int:
    return len(run_statuses(client.tracking_uri))


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --------------------------------------------------------------------------- in a new process
def test_train_script_end_to_end(tmp_path, new_store):
    """Also progress while it works (trainer.progress=auto: lines into a pipe). Read line by line:
    as the first epoch's line arrives, the child is stopped (SIGSTOP) and what it has written so far
    is read: not yet the last epoch's line (printed at the end, they would arrive together; the 40
    epochs take ~0.3 s, stopping it takes well under a millisecond), and its run is RUNNING."""
    import select
    import signal
    import subprocess

    store = new_store(tmp_path)
    args = ["optim=sgd", "optim.lr=0.3", "model.hidden=[16,8]", *TINY[:1], "trainer.max_epochs=40",
            "trainer.early_stopping.enabled=false", "tracking.reliability_every_n_epochs=5",  # 8: the drawing process
            *_store_args(store)]
    # as from a user's shell: Python buffers a pipe's output unless told not to (this sandbox sets it)
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([PYTHON, str(ROOT / "pipelines" / "train.py"), *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    raw, during, pending = b"", None, b""
    while chunk := os.read(proc.stdout.fileno(), 65536):
        raw += chunk
        if during is None and b"\nepoch  1/40  train loss " in b"\n" + raw:
            proc.send_signal(signal.SIGSTOP)
            while select.select([proc.stdout], [], [], 0.2)[0]:  # all it wrote before it stopped
                pending += os.read(proc.stdout.fileno(), 65536)
            during = (raw + pending).decode(), run_statuses(store["uri"])
            proc.send_signal(signal.SIGCONT)
            raw += pending
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    out = raw.decode()
    lines = out.splitlines()
    assert during is not None and list(during[1].values()) == ["RUNNING"], during
    assert "epoch 40/40" not in during[0] and "report: " not in during[0], during[0]
    assert [ln.split("  train")[0] for ln in lines if ln.startswith("epoch ")] == [f"epoch {e:>2}/40" for e in range(1, 41)]
    assert any(ln.startswith("report: val/test metrics") for ln in lines)
    run_id = re.search(r"^run_id: ([0-9a-f]{32})$", out, re.M).group(1)
    # the summary table: val, test, its 95% interval, the baselines on the same test rows
    assert re.search(r"^auroc\s+0\.\d{4}\s+0\.\d{4}\s+\[0\.\d{4}, 0\.\d{4}\]\s+0\.\d{4}\s+0\.\d{4}$", out, re.M)
    assert re.search(r"^MLP - (logreg|hgb) on test \(95% paired bootstrap\):\s+auroc ", out, re.M)
    # pasted as printed it runs without an activated venv: its first word is this venv's mlflow
    # (a long command is printed on several lines joined by ` \`, as a shell reads them)
    joined = out.replace(" \\\n", " ")
    assert "mlflow ui --backend-store-uri sqlite:///" in " ".join(joined.split()) and "--host 127.0.0.1" in out
    ui = shlex.split(re.search(r"^MLflow UI:\s+(.*)$", joined, re.M).group(1))
    assert os.access(ui[0], os.X_OK) and Path(ui[0]).parent == Path(PYTHON).parent
    assert "workflowType=machine_learning" in out
    client = MlflowClient(store["uri"])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "sgd-lr0.3-h16x8-s0"
    assert run.data.tags["outcome"] == "converged"
    assert "optim=sgd" in run.data.tags["command"]
    assert not (tmp_path / "outputs").exists()  # Hydra writes no output folders


@pytest.mark.slow
def test_bad_input_in_a_new_process_is_one_line_exit_2_and_leaves_no_run(tmp_path):
    """A data error raised after the heavy imports, inside Hydra's main: run_cli's one line and
    exit code 2 reach the shell, and no run is created."""
    args = ["data=csv", "data.path=/no/such.csv", "data.target=y", "data.positive=1"]
    proc = run_pipeline("train.py", *args, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = _one_error_line(proc.stderr)
    assert "/no/such.csv" in line and "no such file" in line
    if (tmp_path / "mlflow.db").exists():
        client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        assert _run_count(client) == 0


# --------------------------------------------------------------------------- in-process
@pytest.mark.parametrize(
    "args, needle",
    [
        (["optim.learning_rate=1"], "unknown config key 'optim.learning_rate'"),
        (["optim=adam"], "optim=adam is not an option: choose one of adamw, sgd"),
        (["trainer.max_epochs=ten"], "trainer.max_epochs"),
        (["optim.lr=-1"], "optim.lr=-1.0 must be > 0"),
        (["experiment=pitfall_lr_divergence"], "is a sweep preset: run .venv/bin/python pipelines/sweep.py"),
    ],
)
def test_bad_config_is_one_line_exit_2_and_leaves_no_run(capsys, client, store, args, needle):
    before = _run_count(client)
    capsys.readouterr()  # what opening the store logged (the first test of a session creates its tables)
    with pytest.raises(SystemExit) as info:
        preflight(argv=[*args, f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert needle in _one_error_line(err) and out == ""
    assert _run_count(client) == before


def test_a_good_config_passes_preflight(capsys, store):
    preflight(argv=["optim=sgd", "optim.lr=0.3", f"tracking.uri={store['uri']}"])  # returns: Hydra's turn
    assert capsys.readouterr() == ("", "")


def _train_job(cfg):
    """pipelines/train.py's job for an ordinary run."""

    def job() -> None:
        check_pipeline(cfg, "train")
        train(cfg)

    return job


def _csv_with_constant_column(tmp_path):
    rows = "\n".join(f"{i % 7},{5},{i % 2}" for i in range(200))
    return write_csv(tmp_path, "a,b,label\n" + rows + "\n")


def _csv_of_one_class(tmp_path):
    return write_csv(tmp_path, "a,label\n1,0\n2,0\n3,0\n")


@pytest.mark.parametrize(
    "data, needles",
    [
        pytest.param(lambda tmp: ["data.path=/no/such.csv", "data.target=y", "data.positive=1"],
                     ["/no/such.csv", "no such file", "data.path="], id="missing-file"),
        pytest.param(lambda tmp: [f"data.path={_csv_with_constant_column(tmp)}", "data.target=label",
                                  "data.positive=1"], ["feature(s) b are constant", "data.drop_columns"], id="constant-feature"),
        pytest.param(lambda tmp: [f"data.path={_csv_of_one_class(tmp)}", "data.target=label", "data.positive=1"],
                     ["'1' never occurs", "data.positive"], id="positive-absent"),
    ],
)
def test_bad_data_is_one_line_exit_2_and_leaves_no_run(capsys, make_cfg, client, tmp_path, data, needles):
    args = ["data=csv", *data(tmp_path)]
    preflight(argv=args)  # the config itself is fine: the file is the problem
    cfg = make_cfg(*args)
    before = _run_count(client)
    capsys.readouterr()  # what preflight and opening the store printed
    with pytest.raises(SystemExit) as info:
        run_cli(_train_job(cfg))
    assert info.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    for needle in needles:
        assert needle in line, line
    assert _run_count(client) == before


def test_uci_file_trains(make_cfg, client):
    path = shared_file(UCI_DROPOUT_CSV)
    result = train(make_cfg("data=uci_dropout", f"data.path={path}", "data.early_warning=true", *TINY[4:],
                            "trainer.max_epochs=3", tiny=False))
    assert result.outcome == "converged"
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "converged"
    fingerprint = json.loads(run.data.tags["data_fingerprint"])
    assert fingerprint["path"] == str(path) and fingerprint["rows"] == 4424 and fingerprint["early_warning"] is True
