"""MLflow's standard metadata on every run (issue 17): the dataset input (name, the data
fingerprint as digest, source, schema) on a run and on a sweep's parent, the standard source and
user tags; and sweep trials named with their outcome when they did not converge."""

from __future__ import annotations

import json
import re

from helpers import write_csv

from dropout_risk.sweep.run import run_sweep
from dropout_risk.tracking.dataset import dataset_digest
from dropout_risk.tracking.names import TRIAL_NAME, outcome_run_name, trial_run_name
from dropout_risk.training.train import train

SMALL_SWEEP = ["optim=sgd", "sweep.lr_min=0.01", "sweep.lr_max=1e4", "sweep.n_scan=3", "sweep.n_refine=0",
               "sweep.seeds=1", "data.n_students=800", "trainer.max_epochs=2"]


def _inputs(client, run_id: str) -> list:
    return client.get_run(run_id).inputs.dataset_inputs


def test_a_run_records_its_dataset_and_the_standard_tags(make_cfg, client):
    result = train(make_cfg())
    run = client.get_run(result.run_id)
    tags = run.data.tags
    fingerprint = json.loads(tags["data_fingerprint"])
    (given,) = _inputs(client, result.run_id)
    ds = given.dataset
    assert ds.name == "cohort" and ds.digest == dataset_digest(fingerprint) and len(ds.digest) == 32
    assert ds.source_type == "code" and "cohort(n=1200, seed=0" in json.loads(ds.source)["generator"]
    columns = json.loads(ds.schema)["mlflow_colspec"]
    assert [c["name"] for c in columns][-1] == "dropout" and len(columns) >= 5
    assert {t.key: t.value for t in given.tags} == {"mlflow.data.context": "training",
                                                    "split_fingerprint": tags["split_fingerprint"]}
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
    assert tags["mlflow.user"]
    assert tags["mlflow.source.git.commit"] == tags["git_commit"] or tags["git_commit"] == "unknown"


def test_a_csv_run_names_its_file_and_digests_its_bytes(make_cfg, client, tmp_path):
    rows = "\n".join(f"{i % 7},{(i * 13) % 11},{'a' if i % 3 else 'b'},{int(i % 4 == 0)}" for i in range(400))
    path = write_csv(tmp_path, "x1,x2,group,dropout\n" + rows + "\n", name="students.csv")
    result = train(make_cfg("data.kind=csv", f"data.path={path}", "data.target=dropout", "data.positive=1",
                              "baselines=none"))
    tags = client.get_run(result.run_id).data.tags
    (given,) = _inputs(client, result.run_id)
    assert given.dataset.name == "students.csv" and given.dataset.source_type == "local"
    assert json.loads(given.dataset.source) == {"uri": str(path)}
    assert given.dataset.digest == dataset_digest(json.loads(tags["data_fingerprint"]))
    # the digest follows the file's bytes (its sha256 is in the fingerprint), not where it sits
    assert dataset_digest({"sha256": "a", "rows": 1, "path": "/x"}) == dataset_digest({"sha256": "a", "rows": 1})
    assert dataset_digest({"sha256": "a", "rows": 1}) != dataset_digest({"sha256": "b", "rows": 1})


def test_trial_names_are_short_sortable_and_carry_a_bad_outcome():
    assert trial_run_name("scan", 7, 0.0123, planned=24) == "scan-07-lr0.0123"
    assert trial_run_name("scan", 16, 0.301, planned=80) == "scan-16-lr0.301"
    assert trial_run_name("refine", 3, 0.002, planned=8) == "refine-3-lr0.002"
    assert trial_run_name("scan", 120, 0.1, planned=80) == "scan-120-lr0.1"  # a retry beyond the plan
    names = [trial_run_name("scan", i, 0.1, planned=80) for i in range(80)]
    assert names == sorted(names) and len(set(names)) == 80
    assert outcome_run_name("scan-16-lr0.301", "diverged") == "scan-16-lr0.301-diverged"
    assert outcome_run_name("refine-3-lr0.002", "pruned") == "refine-3-lr0.002-pruned"
    assert outcome_run_name("scan-1-lr0.01", "converged") == "scan-1-lr0.01"
    assert outcome_run_name("scan-1-lr0.01", "catapult") == "scan-1-lr0.01"
    assert all(TRIAL_NAME.match(n) for n in ("scan-16-lr0.301-diverged", "refine-3-lr0.002-pruned-s1"))


def test_sweep_trials_are_renamed_with_their_outcome_and_the_parent_has_the_dataset(make_cfg, client, tmp_path):
    cfg = make_cfg(*SMALL_SWEEP, f"sweep.storage=journal://{tmp_path}/j.log", "sweep.study=names", config="sweep")
    result = run_sweep(cfg, log=lambda _: None)
    parent = client.get_run(result.parent_run_id)
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert len(kids) == 3
    for kid in kids:
        name, outcome = kid.info.run_name, kid.data.tags["outcome"]
        assert re.fullmatch(r"scan-\d-lr[0-9.e+-]+" + ("" if outcome in ("converged", "catapult") else f"-{outcome}"),
                            name), (name, outcome)
        assert kid.data.tags["mlflow.runName"] == name
    assert any(k.info.run_name.endswith("-diverged") for k in kids)  # lr 1e4 with SGD
    digests = {i.dataset.digest for k in kids for i in _inputs(client, k.info.run_id)}
    (given,) = _inputs(client, result.parent_run_id)
    assert digests == {given.dataset.digest}
    assert parent.data.tags["mlflow.source.type"] == "LOCAL"
    # tracking.figures=false (TINY): the parent logs its tables, not the chart, the grid or the atlas
    logged = {f.path for f in client.list_artifacts(result.parent_run_id, "sweep")}
    top = {f.path for f in client.list_artifacts(result.parent_run_id)}
    assert {"sweep/per_lr.csv", "sweep/stability.csv"} <= logged and "sweep_summary.csv" in top
    assert not [f.path for f in client.list_artifacts(result.parent_run_id, "plots")] and "images" not in top
