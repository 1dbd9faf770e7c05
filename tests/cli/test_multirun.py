"""`train.py -m` as one group (issue 18 item 1): a parent run, each job nested and tagged with its
number and overrides, a job that fails recorded while the next one runs, a line per job at the
end and a non-zero exit. Runs pipelines/train.py's own __main__ in this process (runpy): the
preflight, Hydra's multirun, the callback and the jobs, as a user's command runs them."""

from __future__ import annotations

import csv
import io
import runpy
import sys

import pytest
from helpers import ROOT, TINY
from mlflow import MlflowClient


def _train_main(monkeypatch, tmp_path, *args: str) -> int:
    monkeypatch.chdir(tmp_path)  # Hydra's multirun.yaml goes under ./mlruns/multirun/
    monkeypatch.setattr(sys, "argv", [str(ROOT / "pipelines" / "train.py"), *args])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "pipelines" / "train.py"), run_name="__main__")
        raise SystemExit(0)  # a multirun whose jobs all succeeded returns normally
    return int(info.value.code or 0)


def _children(client, parent_id: str) -> dict[str, object]:
    exp = client.get_run(parent_id).info.experiment_id
    kids = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {k.data.tags["multirun_job"]: k for k in kids}


def test_a_multirun_with_a_failing_and_a_good_job(monkeypatch, tmp_path, capsys, new_store):
    store = new_store(tmp_path / "store")
    code = _train_main(monkeypatch, tmp_path, "-m", "optim.lr=-1,0.01", *TINY, "baselines=none",
                       f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}")
    out, err = capsys.readouterr()
    assert code == 1  # a job failed: the multirun says so with its exit code
    # the failed job: one error line naming the job; the next job ran all the same
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        "error: job 0: optim.lr=-1.0 must be > 0: pass a positive learning rate, e.g. optim.lr=1e-3"]
    client = MlflowClient(store["uri"])
    parent_id = next(ln.split()[-1] for ln in out.splitlines() if ln.startswith("multirun: parent run "))
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["multirun"] == "parent"
    assert parent.data.tags["n_jobs"] == "2" and parent.data.tags["n_failed"] == "1"
    assert parent.data.tags["multirun_overrides"].startswith("optim.lr=-1,0.01 ")
    kids = _children(client, parent_id)
    assert set(kids) == {"0", "1"}
    bad, good = kids["0"], kids["1"]
    assert bad.info.status == "FAILED" and bad.data.tags["outcome"] == "failed"
    assert "optim.lr=-1.0 must be > 0" in bad.data.tags["error"]
    assert bad.data.tags["multirun_overrides"].startswith("optim.lr=-1 ")
    assert good.info.status == "FINISHED" and good.data.tags["outcome"] == "converged"
    assert good.data.tags["multirun_overrides"].startswith("optim.lr=0.01 ") and good.data.params["optim.lr"] == "0.01"
    # the parent keeps the table of jobs and Hydra's record of the multirun as launched
    raw = open(client.download_artifacts(parent_id, "multirun/jobs.csv")).read()
    rows = list(csv.DictReader(io.StringIO(raw)))
    assert [(r["job"], r["status"], r["run_id"]) for r in rows] == [
        ("0", "failed", bad.info.run_id), ("1", "converged", good.info.run_id)]
    assert "multirun/multirun.yaml" in {f.path for f in client.list_artifacts(parent_id, "multirun")}
    # one line per job at the end, within 100 columns
    summary = out[out.index("multirun: 2 jobs, 1 failed"):].splitlines()
    assert summary[1].startswith("  job 0  optim.lr=-1    failed     optim.lr=-1.0 must be > 0")
    assert summary[2].startswith("  job 1  optim.lr=0.01  converged  val log loss ")
    assert max(len(ln) for ln in summary) <= 100
    # Hydra wrote nothing but multirun.yaml, under the tracking home; no train.log anywhere
    written = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "mlruns").rglob("*") if p.is_file())
    assert len(written) == 1 and written[0].startswith("mlruns/multirun/") and written[0].endswith("/multirun.yaml")
    assert not list(tmp_path.rglob("*.log"))


def test_a_multirun_whose_jobs_all_succeed_exits_0(monkeypatch, tmp_path, capsys, new_store):
    store = new_store(tmp_path / "store")
    code = _train_main(monkeypatch, tmp_path, "-m", "seed=0,1", *TINY, "baselines=none", "trainer.max_epochs=1",
                       f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}")
    out = capsys.readouterr().out
    assert code == 0 and "multirun: 2 jobs, 0 failed" in out
    client = MlflowClient(store["uri"])
    parent_id = next(ln.split()[-1] for ln in out.splitlines() if ln.startswith("multirun: parent run "))
    kids = _children(client, parent_id)
    assert {k: v.data.params["seed"] for k, v in kids.items()} == {"0": "0", "1": "1"}
    assert {v.info.status for v in kids.values()} == {"FINISHED"}
