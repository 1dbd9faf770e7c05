"""Reproduction on real parts: train, then re-run from the logged run or the config file, and check
the verdict, the weight hash, the tags, and every refusal (one line each)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml
from helpers import CONF, TINY, run_pipeline
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dropout_risk.config.saved import load_config_text
from dropout_risk.errors import ReproduceError
from dropout_risk.reproduce.run import reproduce, run_reproduce
from dropout_risk.sweep.run import run_sweep
from dropout_risk.training.train import train


def _compose(store, *overrides: str, config: str = "config"):
    base = [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        if config == "reproduce":
            return compose(config, overrides=[f"tracking.uri={store['uri']}", *overrides])
        return compose(config, overrides=[*TINY, *base, *overrides])


def _run(store, *overrides: str) -> tuple[int, list[str], list[str]]:
    """run_reproduce as the pipeline calls it: (exit code, printed lines, warnings)."""
    lines: list[str] = []
    warnings: list[str] = []
    code = run_reproduce(_compose(store, *overrides, config="reproduce"), echo=lines.append, warn=warnings.append)
    return code, "\n".join(lines).splitlines(), warnings


def _messages(lines: list[str]) -> list[str]:
    """The printed lines with each wrapped one joined again (a continuation starts with 4 spaces)."""
    out: list[str] = []
    for ln in lines:
        if ln.startswith("    ") and out:
            out[-1] += " " + ln.strip()
        else:
            out.append(ln)
    return out


def _new_run_ids(lines: list[str]) -> list[str]:
    return [ln.split(": ", 1)[1] for ln in lines if ln.startswith("run_id: ")]


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_store) -> dict[str, str]:
    """This module's own MLflow store (it overrides conftest's session store here, so make_cfg and
    client use it too): reproduce config=... finds the original by its config among the runs of
    the store, and in the session store another module's run of the same config could be the
    oldest. Here the only training runs of `original`'s config are it and its reproductions, in
    any test order and with any other modules in the same worker."""
    return new_store(tmp_path_factory.mktemp("reproduce-mlruns"))


@pytest.fixture(scope="module")
def original(store):
    """One trained run for the module."""
    result = train(_compose(store, "seed=5"), overrides=["seed=5"])
    return result


@pytest.fixture(scope="module")
def original_config(original, store, tmp_path_factory) -> str:
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("saved")
    return MlflowClient(store["uri"]).download_artifacts(original.run_id, "config/config.yaml", str(folder))


def test_reproduce_a_run_is_exact(original, client, store):
    code, lines, warnings = _run(store, f"run_id={original.run_id}")
    assert code == 0
    assert "verdict: exact (" in "\n".join(lines) and "weights identical" in "\n".join(lines)
    header = next(ln for ln in lines if ln.startswith("metric"))
    assert header.split() == ["metric", "original", "re-run", "difference", "verdict"]
    assert re.search(r"^val/auroc\s+(\S+)\s+\1\s+0\s+exact$", "\n".join(lines), re.M)
    assert re.search(r"^weights_sha256\s+\S+\s+\S+\s+-\s+exact$", "\n".join(lines), re.M)
    [new_id] = _new_run_ids(lines)
    new = client.get_run(new_id)
    assert new.info.status == "FINISHED"
    assert new.data.tags["reproduced_from"] == original.run_id
    assert new.data.tags["reproduction"] == "exact"
    assert new.data.tags["weights_sha256"] == original.weights_sha256  # (a) twice in one process
    for key, value in original.metrics.items():
        if not key.startswith("time/"):
            assert new.data.metrics[key] == value or (np.isnan(value) and np.isnan(new.data.metrics[key])), key
    assert not any("package versions" in w for w in warnings)
    # provenance of the data: JSON fingerprint and its parts as tags
    tags = client.get_run(original.run_id).data.tags
    assert yaml.safe_load(tags["data_fingerprint"])["generator"] == tags["data_generator"]
    assert len(tags["split_fingerprint"]) == 16
    report = client.download_artifacts(new_id, "reproduction/report.txt")
    assert "verdict: exact" in open(report).read()


def test_reproduce_from_a_config_file(original, original_config, store, client):
    code, lines, _ = _run(store, f"config={original_config}")
    assert code == 0, lines
    assert f"compared with run {original.run_id}" in _messages(lines)[0]  # found by its config
    [new_id] = _new_run_ids(lines)
    assert client.get_run(new_id).data.tags["weights_sha256"] == original.weights_sha256


def test_reproduce_a_sweep_trial_alone(make_cfg, client, store, tmp_path):
    """One fit per trial (sweep.population=false): a trial re-run alone is bit-identical."""
    cfg = make_cfg("optim=sgd", "sweep.lr_min=0.01", "sweep.lr_max=1e4", "sweep.n_scan=2", "sweep.n_refine=1",
                   "sweep.population=false", "sweep.seeds=1",
                   "sweep.pruner.name=none", "sweep.sharpness_iters=10", "data.n_students=800",
                   "trainer.max_epochs=2", "sweep.study=repro", f"sweep.storage=journal://{tmp_path}/j.log",
                   config="sweep")
    sweep = run_sweep(cfg, log=lambda _: None)
    parent = client.get_run(sweep.parent_run_id)
    best = client.get_run(parent.data.tags["best_run_id"])
    # the trial's logged config records the thread count the sweep ran it with
    saved = yaml.safe_load(open(client.download_artifacts(best.info.run_id, "config/config.yaml")))
    assert saved["trainer"]["num_threads"] >= 1 and saved["sweep"]["n_scan"] == 2

    code, lines, _ = _run(store, f"run_id={sweep.parent_run_id}")  # default: the best trial
    assert code == 0, lines
    assert "re-running its best trial" in _messages(lines)[0]
    [new_id] = _new_run_ids(lines)
    new = client.get_run(new_id)
    assert new.data.tags["reproduced_from"] == best.info.run_id
    assert new.data.tags["weights_sha256"] == best.data.tags["weights_sha256"]  # (b) trial vs alone
    assert "sweep_id" not in new.data.tags and "mlflow.parentRunId" not in new.data.tags

    code, lines, _ = _run(store, f"run_id={sweep.parent_run_id}", "all=true")
    assert code == 0, lines
    assert len(_new_run_ids(lines)) == 3
    assert lines[-1] == "verdict: exact (3/3 trials reproduced)"
    # each trial by its number (the `trial` tag: Optuna's, from 0) and name, then the table of all three
    assert len([ln for ln in _messages(lines) if re.fullmatch(r"trial \d+ \((scan|refine)-.+\): exact", ln)]) == 3
    assert lines[-5].split() == ["trial", "run", "name", "largest", "difference", "weights", "verdict"]
    reproduced = {client.get_run(i).data.tags["reproduced_from"]: client.get_run(i) for i in _new_run_ids(lines)}
    for trial_id, rerun in reproduced.items():
        trial = client.get_run(trial_id)
        assert rerun.data.tags["outcome"] == trial.data.tags["outcome"]  # the diverged one too, at its step
        assert rerun.data.tags.get("diverged_at_step") == trial.data.tags.get("diverged_at_step")
    assert "diverged" in {r.data.tags["outcome"] for r in reproduced.values()}


def test_reproduce_a_population_member_alone(make_cfg, client, store, tmp_path):
    """A member of a population re-runs as a population of one: the same initialisation, data order
    and lr, equal to rounding (K = 1 runs the plain matmul kernels, K >= 2 the batched ones)."""
    cfg = make_cfg("sweep.lr_min=1e-3", "sweep.lr_max=30", "sweep.n_scan=3", "sweep.seeds=2", "sweep.n_refine=0",
                   "sweep.sharpness_iters=10", "data.n_students=1000", "trainer.max_epochs=3", "sweep.study=pop",
                   f"sweep.storage=journal://{tmp_path}/j.log", config="sweep")
    sweep = run_sweep(cfg, log=lambda _: None)
    kids = client.search_runs([client.get_run(sweep.parent_run_id).info.experiment_id],
                              f"tags.mlflow.parentRunId = '{sweep.parent_run_id}'")
    assert len(kids) == 6 and {k.data.tags["engine"] for k in kids} == {"population"}
    member = next(k for k in kids if k.data.tags["outcome"] == "converged" and k.data.params.get("trainer.seed") == "1")
    code, lines, _ = _run(store, f"run_id={member.info.run_id}")
    assert code == 0, [ln for ln in lines if "exact" not in ln and "within_tolerance" not in ln]
    assert "verdict: within_tolerance" in "\n".join(lines) or "verdict: exact" in "\n".join(lines), lines
    [new_id] = _new_run_ids(lines)
    new = client.get_run(new_id)
    assert new.data.tags["engine"] == "population" and new.data.tags["population_size"] == "1"
    assert new.data.params["trainer.seed"] == "1" and new.data.params["optim.lr"] == member.data.params["optim.lr"]
    diffs = {k: abs(v - new.data.metrics[k]) for k, v in member.data.metrics.items()
             if not k.startswith(("time/", "population/")) and np.isfinite(v)}
    assert max(diffs.values()) < 1e-5, max(diffs.items(), key=lambda kv: kv[1])
    # with no tolerance at all the re-run is still compared within population_tolerance; at 0 it would not pass
    code, lines, _ = _run(store, f"run_id={member.info.run_id}", "population_tolerance=0")
    assert code == 1 and "verdict: mismatch" in "\n".join(lines)


def test_changed_moved_and_missing_data(make_cfg, client, store, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] + 0.5 * rng.normal(size=400) > 0.3).astype(int)
    text = "a,b,c,label\n" + "".join(f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{v}\n" for r, v in zip(x, y, strict=True))
    path = tmp_path / "students.csv"
    path.write_text(text)
    run = train(make_cfg("data=csv", f"data.path={path}", "data.target=label", "data.positive=1"))

    path.write_text(text.replace(",1\n", ",0\n", 30))  # 30 labels flipped
    with pytest.raises(ReproduceError, match=rf"data {re.escape(str(path))} differs from what run {run.run_id} "
                                             r"trained on: .*sha256 .*pass allow_data_change=true") as info:
        _run(store, f"run_id={run.run_id}")
    assert "\n" not in str(info.value)
    code, lines, warnings = _run(store, f"run_id={run.run_id}", "allow_data_change=true")
    assert code == 1 and "verdict: mismatch" in "\n".join(lines)  # the mismatch is detected
    assert any("re-running anyway" in w for w in warnings)

    moved = tmp_path / "elsewhere.csv"
    moved.write_text(text)
    path.unlink()
    with pytest.raises(ReproduceError, match=r"students\.csv .*does not exist.*data_path=") as info:
        _run(store, f"run_id={run.run_id}")
    assert "\n" not in str(info.value)
    code, lines, warnings = _run(store, f"run_id={run.run_id}", f"data_path={moved}")
    assert code == 0 and "verdict: exact" in "\n".join(lines)
    assert any("moved" in w for w in warnings)


def _config_with(original_config: str, edit) -> str:
    data = yaml.safe_load(open(original_config))
    edit(data)
    return yaml.safe_dump(data)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda d: d["optim"].update(learning_rate=1), "unknown config key 'optim.learning_rate'"),
        (lambda d: d["trainer"].update(max_epochs="ten"), "trainer.max_epochs"),
        (lambda d: d.update(schema_version=99), "schema_version=99 was written by a newer dropout-risk"),
        (lambda d: d["optim"].update(_target_="os.system"), "'os.system' is not allowed"),
        (lambda d: d["optim"].update(lr=-1.0), "optim.lr=-1.0 must be > 0"),
        (lambda d: d.pop("optim"), "lacks optim"),
    ],
)
def test_config_files_failing_the_schema_are_refused(original_config, edit, needle):
    with pytest.raises(ReproduceError, match=re.escape(needle)) as info:
        load_config_text(_config_with(original_config, edit), "config file x.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("config file x.yaml")


def test_a_config_saved_before_a_key_was_added_loads_with_what_it_meant_then(original_config):
    """config/schema.py ADDED_KEYS: keys added since schema_version 1 are filled in for older
    saved configs with the behaviour they had (here: every step's loss to MLflow)."""
    from dropout_risk.config.schema import ADDED_KEYS

    def drop_added(d):
        for key in ADDED_KEYS:
            *sections, leaf = key.split(".")
            node = d
            for part in sections:
                node = node.get(part, {})
            node.pop(leaf, None)

    old = load_config_text(_config_with(original_config, drop_added), "config file old.yaml")
    assert old.tracking.step_metrics_every_n_steps == 1
    for key, value in ADDED_KEYS.items():
        assert OmegaConf.select(old, key) == value
    changed = load_config_text(_config_with(original_config, lambda d: d["tracking"].update(
        step_metrics_every_n_steps=7)), "config file new.yaml")
    assert changed.tracking.step_metrics_every_n_steps == 7  # a saved value is never overwritten


def test_bad_requests_are_one_line_and_leave_no_run(original, original_config, client, store, tmp_path):
    exp = client.get_experiment_by_name("dropout-risk").experiment_id
    foreign = client.create_run(exp, run_name="made-by-another-tool").info.run_id
    client.set_terminated(foreign)
    bad = tmp_path / "bad.yaml"
    bad.write_text(_config_with(original_config, lambda d: d.update(schema_version=2)))
    sweep_cfg = tmp_path / "sweep.yaml"
    sweep_cfg.write_text(_config_with(original_config, lambda d: d.update(sweep={"n_scan": 3})))
    cases = [
        ([], "nothing to reproduce"),
        (["run_id=0123456789abcdef0123456789abcdef"], "is not in"),
        (["run_id='no such id'"], "is not an MLflow run id"),
        ([f"run_id={foreign}"], "has no config/config.yaml artifact"),
        ([f"config={tmp_path}/absent.yaml"], "no such file"),
        ([f"config={bad}"], "newer dropout-risk"),
        ([f"config={sweep_cfg}"], "is a sweep's config"),
        ([f"run_id={original.run_id}", f"tracking.uri=sqlite:///{tmp_path}/none.db"], "no MLflow store there"),
        ([f"run_id={original.run_id}", "tolerance=-1"], "tolerance=-1.0 must be >= 0"),
    ]
    before = len(client.search_runs([exp], max_results=1000))
    for overrides, needle in cases:
        with pytest.raises(ReproduceError, match=re.escape(needle)) as info:
            reproduce(_compose(store, *overrides, config="reproduce"), echo=lambda _: None)
        assert "\n" not in str(info.value), overrides
    assert len(client.search_runs([exp], max_results=1000)) == before
    assert not (tmp_path / "none.db").exists()  # no store was created just to say it is not there


def test_pipeline_in_a_new_process(original, client, store, tmp_path):
    """(c) a separate process gives the same weights; a changed package version is one warning."""
    client.set_tag(original.run_id, "version.numpy", "1.0.0")
    try:
        proc = run_pipeline("reproduce.py", f"run_id={original.run_id}", f"tracking.uri={store['uri']}",
                            cwd=tmp_path)
    finally:
        client.set_tag(original.run_id, "version.numpy", np.__version__)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "verdict: exact" in proc.stdout
    new_id = re.search(r"^run_id: ([0-9a-f]{32})$", proc.stdout, re.M).group(1)
    assert client.get_run(new_id).data.tags["weights_sha256"] == original.weights_sha256
    versions = [ln for ln in proc.stderr.splitlines() if "package versions differ" in ln]
    assert versions == [f"warning: package versions differ from run {original.run_id}: numpy 1.0.0 -> {np.__version__}"]



@pytest.mark.slow  # a second process of the same pipeline; the in-process cases above cover the message
def test_bad_request_in_a_new_process_is_one_line_exit_2(tmp_path):
    proc = run_pipeline("reproduce.py", f"config={tmp_path}/absent.yaml", cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: config=")
