"""compare on real runs: three train() runs (two of them trials of a sweep) and a bare run from
another experiment in the session's MLflow store; the library and once the pipeline."""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
from helpers import CONF, TINY, run_pipeline
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from dropout_risk.compare.request import compose_compare_config, normalize_argv
from dropout_risk.compare.run import compare, run_compare
from dropout_risk.errors import CompareError
from dropout_risk.tracking.run import Run
from dropout_risk.training.train import train

EXPERIMENT = "compare-test"
FILES = ("reliability_grid.png", "loss_curves.png", "comparison.csv", "comparison.md")


@pytest.fixture(scope="module")
def runs(store):
    """Runs made once for this module (make_cfg is per test): an AdamW run, and two SGD trials
    of a sweep (one diverged), all in EXPERIMENT; a bare run without metrics or predictions in
    another experiment."""

    def cfg(*overrides):
        base = [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}",
                f"tracking.experiment={EXPERIMENT}", "trainer.max_epochs=2"]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=[*TINY, *base, *overrides])

    adamw = train(cfg("optim.lr=0.01"))
    parent = Run.start(store["uri"], EXPERIMENT, store["artifacts"], "sweep-parent", tags={"sweep_id": "s1"})
    trials = [train(cfg("optim=sgd", f"optim.lr={lr}"), parent_run_id=parent.run_id,
                    tags={"sweep_id": "s1", "trial": str(i), "phase": "scan"})
              for i, lr in enumerate((0.3, 1e4))]
    parent.end("FINISHED")
    assert [t.outcome for t in trials] == ["converged", "diverged"]
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("compare-test-other") or client.get_experiment(
        client.create_experiment("compare-test-other", artifact_location=f"file://{store['artifacts']}"))
    bare = client.create_run(exp.experiment_id, run_name="bare-run", tags={"outcome": "converged"})
    client.log_param(bare.info.run_id, "optim.lr", "0.5")
    client.log_metric(bare.info.run_id, "val/auroc", 0.75)
    client.set_terminated(bare.info.run_id)
    return {"adamw": adamw.run_id, "sgd": trials[0].run_id, "diverged": trials[1].run_id,
            "parent": parent.run_id, "bare": bare.info.run_id}


def _compare(store, tmp_path, **kw):
    kw.setdefault("log_to_mlflow", False)
    return compare(tracking_uri=store["uri"], out_dir=tmp_path / "out", artifact_location=store["artifacts"], **kw)


def test_three_runs_files_numbers_and_comparison_run(runs, store, client, tmp_path):
    ids = [runs["adamw"], runs["sgd"], runs["diverged"]]
    result = _compare(store, tmp_path, runs=ids, log_to_mlflow=True)
    for name in FILES:
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    for name in ("reliability_grid.png", "loss_curves.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r.run_id for r in result.runs] == ids
    assert result.notes == []
    # the params that differ, and only those
    assert {"optim._target_", "optim.lr"} <= set(result.differing)
    assert not {"seed", "model.hidden", "data.n_students"} & set(result.differing)

    # the CSV: one row per run, in order; every number equals MLflow's final metric exactly
    with open(tmp_path / "out" / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run_id"] for r in rows] == ids
    for row in rows:
        mlflow_run = client.get_run(row["run_id"])
        assert row["run_name"] == mlflow_run.info.run_name
        assert row["outcome"] == mlflow_run.data.tags["outcome"]
        assert row["optim.lr"] == mlflow_run.data.params["optim.lr"]
        metrics = mlflow_run.data.metrics
        for key in ("val/loss", "val/auroc", "val/ece", "val/brier", "test/auroc", "temperature",
                    "val/ece_calibrated"):
            assert key in row, key
        for key, value in metrics.items():
            assert key in row, key
            got = float(row[key])
            assert got == value or (math.isnan(got) and math.isnan(value)), key
    assert rows[2]["outcome"] == "diverged"

    # the curves were fetched in bulk and equal MLflow's histories
    for rec in result.runs:
        steps, values = rec.curves["train/loss"]
        hist = client.get_metric_history(rec.run_id, "train/loss")
        assert list(steps) == [m.step for m in hist]
        assert np.array_equal(values, [m.value for m in hist], equal_nan=True)
        assert rec.has_reliability and rec.val_y.shape == rec.val_p.shape

    # the markdown: header, separator, one row per run
    md = (tmp_path / "out" / "comparison.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 3 and "| run_id | run_name |" in table[0]
    assert result.markdown in md

    # the comparison run: its own experiment, tagged, the four files as artifacts
    comparison = client.get_run(result.comparison_run_id)
    assert comparison.info.status == "FINISHED"
    assert client.get_experiment(comparison.info.experiment_id).name == "dropout-risk-comparisons"
    assert comparison.data.tags["comparison_of"] == ",".join(ids)
    assert {f.path for f in client.list_artifacts(result.comparison_run_id)} == set(FILES)


def test_other_experiment_and_missing_metrics_are_empty_cells(runs, store, tmp_path):
    result = _compare(store, tmp_path, runs=[runs["sgd"], runs["bare"]])
    assert [r.experiment for r in result.runs] == [EXPERIMENT, "compare-test-other"]
    assert len(result.notes) == 1 and "no reliability data" in result.notes[0] and runs["bare"] in result.notes[0]
    with open(tmp_path / "out" / "comparison.csv") as fh:
        sgd, bare = list(csv.DictReader(fh))
    assert bare["val/auroc"] == "0.75" and bare["val/ece"] == "" and bare["temperature"] == ""
    assert sgd["val/ece"] != ""
    assert "optim._target_" in result.differing  # absent in the bare run: differs
    assert (tmp_path / "out" / "reliability_grid.png").stat().st_size > 0


def test_sweep_selects_its_trials_in_order(runs, store, tmp_path):
    result = _compare(store, tmp_path, sweep=runs["parent"])
    assert [r.run_id for r in result.runs] == [runs["sgd"], runs["diverged"]]
    result = _compare(store, tmp_path, sweep=runs["parent"], filter="tags.outcome = 'diverged'")
    assert [r.run_id for r in result.runs] == [runs["diverged"]]
    result = _compare(store, tmp_path, sweep=runs["parent"], max_runs=1)
    assert [r.run_id for r in result.runs] == [runs["sgd"]]
    assert "pass max_runs=2" in result.notes[0]


def test_filter_and_experiment_select(runs, store, tmp_path):
    result = _compare(store, tmp_path, filter="params.`optim.lr` = '0.01'", experiment=EXPERIMENT)
    assert [r.run_id for r in result.runs] == [runs["adamw"]]
    result = _compare(store, tmp_path, filter="tags.outcome = 'diverged' and tags.sweep_id = 's1'")
    assert [r.run_id for r in result.runs] == [runs["diverged"]]
    result = _compare(store, tmp_path, experiment=EXPERIMENT, max_runs=2)
    assert len(result.runs) == 2 and "more than 2 runs matched" in result.notes[0]


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"runs": ["0" * 32]}, "run id not found"),
        ({"runs": ["not an id!"]}, "is not a run id"),
        ({}, "nothing selected"),
        ({"filter": "metrics.`val/auroc` >> 0.8"}, "MLflow rejected the filter"),
        ({"filter": "nonsense"}, "MLflow rejected the filter"),
        ({"filter": "metrics.`val/auroc` > 2"}, "no runs match"),
        ({"experiment": "no-such-experiment"}, "experiment 'no-such-experiment' not found"),
        ({"sweep": "f" * 32}, "sweep parent run " + "f" * 32 + " not found"),
        ({"runs": ["RUN:bare"]}, "none of the 1 selected runs has reliability data"),
        ({"runs": ["RUN:sgd"], "max_runs": 0}, "max_runs=0 must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_logs_nothing(runs, store, client, tmp_path, kwargs, needle):
    kwargs = {k: [runs[v[4:]] if v.startswith("RUN:") else v for v in val] if k == "runs" else val
              for k, val in kwargs.items()}
    exp = client.get_experiment_by_name("dropout-risk-comparisons")
    before = len(client.search_runs([exp.experiment_id])) if exp else 0
    with pytest.raises(CompareError, match=re.escape(needle)) as info:
        _compare(store, tmp_path, log_to_mlflow=True, **kwargs)
    assert "\n" not in str(info.value)
    exp = client.get_experiment_by_name("dropout-risk-comparisons")
    assert (len(client.search_runs([exp.experiment_id])) if exp else 0) == before
    assert not (tmp_path / "out").exists()


def test_missing_store_is_refused_and_not_created(tmp_path):
    with pytest.raises(CompareError, match="no MLflow store"):
        compare(runs=["a" * 32], tracking_uri=f"sqlite:///{tmp_path}/none.db", out_dir=tmp_path / "out")
    assert not (tmp_path / "none.db").exists()


def test_argv_and_config():
    assert normalize_argv(["filter=tags.outcome = 'diverged'", "runs=a,b", "runs=c", "experiment=null",
                           "max_runs=3", 'filter="already quoted"']) == [
        "filter=\"tags.outcome = 'diverged'\"", "runs=[a,b]", "runs=[c]", "experiment=null", "max_runs=3",
        'filter="already quoted"']
    cfg = compose_compare_config(["sweep=abc", "experiment=my exp", "filter=metrics.`val/auroc` > 0.8"])
    assert cfg.sweep == "abc" and cfg.experiment == "my exp" and cfg.filter == "metrics.`val/auroc` > 0.8"
    assert cfg.max_runs == 32 and cfg.runs == [] and cfg.comparison_experiment == "dropout-risk-comparisons"
    assert cfg.out_dir.startswith("compare_out/")
    with pytest.raises(Exception, match="max_runz"):
        compose_compare_config(["max_runz=3"])


def test_run_compare_prints_table_and_folder(runs, store, tmp_path, capsys):
    cfg = compose_compare_config([f"runs=[{runs['sgd']},{runs['bare']}]", f"tracking.uri={store['uri']}",
                                  f"out_dir={tmp_path}/printed", "log_to_mlflow=false"])
    assert run_compare(cfg) == 0
    out, err = capsys.readouterr()
    assert f"output: {tmp_path}/printed" in out
    # a compact table on stdout (the full one in comparison.md and comparison.csv, named below it)
    assert "| run name " in out and "| val log loss | val ECE | val AUROC |" in out
    assert "bare-run" in out and runs["sgd"] not in out
    assert f"full table: {tmp_path}/printed/comparison.md" in " ".join(out.split())  # a long line wraps
    assert runs["sgd"] in (tmp_path / "printed" / "comparison.md").read_text()
    assert err.strip().startswith("warning: run ") and "no reliability data" in err


def test_pipeline_end_to_end(runs, store, tmp_path):
    # sweep= and experiment= are also config groups of the training app: they must reach compare
    proc = run_pipeline("compare.py", f"sweep={runs['parent']}", f"experiment={EXPERIMENT}",
                        f"tracking.uri={store['uri']}", "out_dir=cmp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"output: {tmp_path / 'cmp'}" in proc.stdout
    assert all((tmp_path / "cmp" / name).exists() for name in FILES)
    run_id = re.search(r"^comparison run_id: ([0-9a-f]{32})", proc.stdout, re.M).group(1)
    tags = MlflowClient(store["uri"]).get_run(run_id).data.tags
    assert tags["comparison_of"] == f"{runs['sgd']},{runs['diverged']}"


@pytest.mark.slow  # more processes of the same pipeline; test_bad_input_is_one_line_and_logs_nothing runs them in-process
def test_bad_input_in_a_new_process(store, tmp_path):
    for args, needle in ((["filter=metrics.`val/auroc` >> 0.8"], "MLflow rejected the filter"),
                         (["runz=[a]"], "unknown config key 'runz'")):
        proc = run_pipeline("compare.py", *args, f"tracking.uri={store['uri']}", "out_dir=bad", cwd=tmp_path)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert needle in lines[0]
    assert not (tmp_path / "bad").exists()


def _grid_cells(png) -> dict[int, float]:
    """{cell index: where the middle one of the cell's three histogram bars lies, as a fraction
    of the way from the left bar to the right bar} of a reliability grid PNG with 4 columns. The
    bars are the solid tab:gray rectangles; a grid row is the bars sharing a baseline, the column
    the quarter of the image width their centre lies in; a cell without bars (a diverged run) is
    absent. A fraction of distances: the same whatever the cell's width in pixels."""
    from PIL import Image
    from scipy import ndimage

    px = np.asarray(Image.open(png).convert("RGB"), dtype=int)
    gray = (np.abs(px - 127) <= 3).all(axis=2)  # tab:gray = #7f7f7f, the histogram's colour
    bars = []
    for ys, xs in ndimage.find_objects(ndimage.label(gray)[0]):
        if xs.stop - xs.start >= 6 and ys.stop - ys.start >= 3 and gray[ys, xs].mean() > 0.85:
            bars.append((ys.stop, (xs.start + xs.stop - 1) / 2))  # solid rectangles: bars, not dashes
    rows: list[list] = []
    for bottom, x in sorted(bars):
        if rows and bottom - rows[-1][-1][0] <= 3:
            rows[-1].append((bottom, x))
        else:
            rows.append([(bottom, x)])
    cells: dict[int, list] = {}
    for r, row in enumerate(rows):
        for _, x in sorted(row, key=lambda b: b[1]):
            cells.setdefault(r * 4 + int(x // (px.shape[1] / 4)), []).append(x)
    assert all(len(xs) == 3 for xs in cells.values()), cells
    return {cell: (mid - left) / (right - left) for cell, (left, mid, right) in cells.items()}


def test_grid_cells_are_the_runs_in_the_requested_order(tmp_path):
    """Ten runs in a shuffled order, drawn at once and with the rows in forked processes: every
    cell shows its own run's diagram. Run k's predictions fill histogram bins 1, 3 + k and 14 (300
    each), so its cell's middle bar lies (2 + k) / 13 of the way between the outer ones; run 3
    diverged (no bars). A grid with its rows (or cells) in another order, or a cell drawn from
    another run's data, fails."""
    from PIL import Image

    from dropout_risk.compare.fetch import RunRecord
    from dropout_risk.compare.grid import save_reliability_grid

    rng = np.random.default_rng(0)
    records = {}
    for k in range(10):
        p = np.concatenate([rng.uniform(b / 15, (b + 1) / 15, 300) for b in (1, 3 + k, 14)])
        if k == 3:
            p[0] = np.nan  # a diverged run's panel
        records[k] = RunRecord(
            run_id=f"{k:032x}", name=f"run-{k}", experiment_id="1", experiment="e", status="FINISHED",
            artifact_uri="", params={"optim.lr": str(10.0**-k)}, metrics={"val/ece": 0.1, "val/auroc": 0.8},
            tags={"outcome": "converged"}, val_y=(rng.uniform(size=p.size) < 0.5).astype(int), val_p=p)
    order = [int(k) for k in rng.permutation(10)]
    assert order != sorted(order) and order != sorted(order, reverse=True)
    expected = {cell: (2 + k) / 13 for cell, k in enumerate(order) if k != 3}
    called = []
    save_reliability_grid([records[k] for k in order], ["optim.lr"], tmp_path / "serial.png", workers=1)
    save_reliability_grid([records[k] for k in order], ["optim.lr"], tmp_path / "parallel.png", workers=2,
                          while_drawing=lambda: called.append(1))
    assert called == [1]
    serial, parallel = (np.asarray(Image.open(tmp_path / f"{n}.png").convert("RGB")) for n in ("serial", "parallel"))
    assert abs(serial.shape[0] - parallel.shape[0]) <= 2 and serial.shape[1:] == parallel.shape[1:]
    for name in ("serial", "parallel"):
        cells = _grid_cells(tmp_path / f"{name}.png")
        got = {cell: round(at * 13 - 2, 2) for cell, at in cells.items()}  # the run each cell shows
        assert set(cells) == set(expected), (name, got, order)
        assert all(abs(cells[c] - expected[c]) < 0.02 for c in expected), (name, got, order)


def test_differing_and_key_params_and_titles():
    from dropout_risk.compare.fetch import RunRecord
    from dropout_risk.compare.table import differing_params, key_params, panel_title

    def rec(name, **params):
        return RunRecord(run_id=name, name=name, experiment_id="1", experiment="e", status="FINISHED",
                         artifact_uri="", params=params, metrics={"val/ece": 0.0123, "val/auroc": float("nan")},
                         tags={"outcome": "diverged"})

    a = rec("t-0", **{"optim._target_": "torch.optim.AdamW", "optim.lr": "0.001", "optim.betas": "[0.9, 0.999]",
                      "seed": "0", "tracking.run_name": "t-0"})
    b = rec("t-1", **{"optim._target_": "torch.optim.SGD", "optim.lr": "0.1", "optim.momentum": "0.0",
                      "seed": "0", "tracking.run_name": "t-1"})
    assert differing_params([a, b]) == ["optim._target_", "optim.betas", "optim.lr", "optim.momentum"]
    assert key_params([a, b], differing_params([a, b])) == ["optim._target_", "optim.lr"]
    assert panel_title(a, ["optim._target_", "optim.lr"]).splitlines() == [
        "t-0", "optim=AdamW  lr=0.001", "ECE 0.012 · AUROC n/a · diverged"]


def test_markdown_puts_each_interval_in_its_metrics_cell():
    from dropout_risk.compare.fetch import RunRecord
    from dropout_risk.compare.table import comparison_table, markdown_table

    def record(run_id, metrics):
        return RunRecord(run_id, run_id, "1", "e", "FINISHED", "", {}, metrics, {})

    records = [record("a", {"test/auroc": 0.91, "test/auroc_ci_low": 0.88, "test/auroc_ci_high": 0.93, "val/ece": 0.05}),
               record("b", {"test/auroc": 0.8, "val/ece": 0.1})]  # b has no interval (e.g. an older run)
    md = markdown_table(records, comparison_table(records, [])).splitlines()
    assert md[0] == "| run_id | run_name | experiment | outcome | val/ece | test/auroc [95% CI] |"
    assert md[2].endswith("| 0.05 | 0.91 [0.88, 0.93] |") and md[3].endswith("| 0.1 | 0.8 |")


def test_compare_command_line_refuses_resolvers(capsys, monkeypatch):
    """Configs are data on compare's command line too: no environment value reaches a comparison."""
    from dropout_risk.compare.request import preflight

    monkeypatch.setenv("DROPOUT_RISK_SECRET", "s3cr3t")
    with pytest.raises(SystemExit) as info:
        preflight(["runs=[${oc.env:DROPOUT_RISK_SECRET}]"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err == "error: configs are data: ${oc.env:...} at runs is not allowed; pass the value itself\n"
