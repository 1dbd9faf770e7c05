"""What makes a run's numbers trustworthy (issue 13), on real runs in a real MLflow store: early
stopping restores the best epoch and everything reported comes from it; the baselines are fitted
on the run's own split and preprocessing; the test intervals and the verdict are those of the
logged predictions; K-fold cross-validation tests every student once."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run_statuses
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from dropout_risk.analysis.bootstrap import intervals, paired_difference
from dropout_risk.analysis.calibration import sigmoid
from dropout_risk.analysis.metrics import binary_metrics
from dropout_risk.data.base import DataError
from dropout_risk.data.loaders import load_data
from dropout_risk.data.module import StudentDataModule, split_indices
from dropout_risk.errors import ConfigError
from dropout_risk.training.cv import cross_validate
from dropout_risk.training.train import train

LEAN = ("mechanism.figure=false", "mechanism.page=false", "calibration.figure=false",
        "tracking.reliability_every_n_epochs=1000", "mechanism.grad_norm=false", "mechanism.every_n_steps=0")
# A network that overfits 1,050 training students within a few epochs: validation log loss has
# its minimum early and then climbs, so early stopping has something to stop.
OVERFIT = ("data.n_students=1500", "model.hidden=[128,128]", "optim.lr=3e-3", "optim.weight_decay=0",
           "data.batch_size=64", "trainer.max_epochs=30", "baselines=none", *LEAN)


def _predictions(client, run_id: str) -> dict[str, np.ndarray]:
    return dict(np.load(client.download_artifacts(run_id, "predictions/predictions.npz")))


@pytest.fixture(scope="module")
def stopped(store):
    """An overfitting run with early stopping (patience 3) and the same run without it."""
    from helpers import CONF
    from hydra import compose, initialize_config_dir

    def run(*extra):
        base = [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}"]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[*base, *OVERFIT, *extra])
        return train(cfg)

    return run("trainer.early_stopping.patience=3"), run("trainer.early_stopping.enabled=false")


def test_early_stopping_stops_and_reports_the_best_epoch(stopped, client):
    es, full = stopped
    val = [h["val/log_loss"] for h in es.val_history]
    best = int(np.argmin(val)) + 1
    m = client.get_run(es.run_id).data.metrics
    # it stopped patience epochs after the best, long before the 30 it was allowed
    assert len(val) == best + 3 < 30
    assert m["best_epoch"] == best and m["stopped_epoch"] == len(val) and m["reported_epoch"] == best
    # everything reported is the best epoch's: the final val metrics are that epoch's, to the bit
    for key, value in es.val_history[best - 1].items():
        assert es.metrics[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
        assert m[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert m["val/log_loss"] < val[-1]  # not the last epoch's
    # the logged predictions (and so temperature scaling, computed from them) are the best epoch's
    pred = _predictions(client, es.run_id)
    assert binary_metrics(pred["val_y"], sigmoid(pred["val_logit"].astype(np.float64)))["log_loss"] == \
        pytest.approx(m["val/log_loss"], abs=1e-6)
    # the same seed without early stopping trains every epoch along the same path, and reports the last
    assert len(full.val_history) == 30
    assert [h["val/log_loss"] for h in full.val_history[: len(val)]] == pytest.approx(val, rel=1e-12)
    fm = client.get_run(full.run_id).data.metrics
    assert fm["reported_epoch"] == 30 and fm["best_epoch"] == best
    assert full.metrics["val/log_loss"] == pytest.approx(full.val_history[-1]["val/log_loss"], rel=1e-12)


def test_the_restored_weights_are_the_best_epochs(stopped, make_cfg, client):
    """A run cut at the best epoch by max_epochs ends with the same weights as the early-stopped
    run restored them: the same sha256."""
    es, _ = stopped
    best = int(client.get_run(es.run_id).data.metrics["best_epoch"])
    cut = train(make_cfg(*OVERFIT, f"trainer.max_epochs={best}", "trainer.early_stopping.enabled=false", tiny=False))
    assert cut.weights_sha256 == es.weights_sha256
    assert client.get_run(es.run_id).data.tags["weights_sha256"] == es.weights_sha256


def test_baselines_are_fitted_on_the_runs_own_split(make_cfg, client):
    cfg = make_cfg("data.n_students=2000", *LEAN)
    result = train(cfg)
    m = client.get_run(result.run_id).data.metrics
    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    (x, y), (xv, yv), (xt, yt) = (tuple(t.numpy() for t in dm.tensors[s]) for s in ("train", "val", "test"))
    ours = {"logreg": LogisticRegression(C=1.0, max_iter=1000, random_state=cfg.seed),
            "hgb": HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, early_stopping=True,
                                                  random_state=cfg.seed)}
    assert result.baselines == ["logreg", "hgb"]
    for name, model in ours.items():
        model.fit(x, y.astype(int))
        for split, xs, ys in (("val", xv, yv), ("test", xt, yt)):
            expected = binary_metrics(ys.astype(int), model.predict_proba(xs)[:, 1])
            for key in ("log_loss", "auroc", "brier", "ece"):
                assert m[f"baseline/{name}/{split}/{key}"] == pytest.approx(expected[key], rel=1e-9), (name, split, key)
    # the verdict: MLP minus the baseline with the lower validation log loss, paired on the test rows
    best = min(ours, key=lambda n: m[f"baseline/{n}/val/log_loss"])
    assert client.get_run(result.run_id).data.tags["best_baseline"] == best
    pred = _predictions(client, result.run_id)
    p_mlp = sigmoid(pred["test_logit"].astype(np.float64))
    p_base = pred[f"test_p_baseline_{best}"].astype(np.float64)
    assert binary_metrics(pred["test_y"], p_base)["auroc"] == pytest.approx(m[f"baseline/{best}/test/auroc"], abs=1e-6)
    diffs = paired_difference(pred["test_y"].astype(int), p_mlp, ours[best].predict_proba(xt)[:, 1],
                              n_resamples=1000, seed=cfg.seed)
    for metric, (d, lo, hi) in diffs.items():
        assert m[f"vs_baseline/test/{metric}_diff"] == pytest.approx(d, abs=1e-6)
        assert lo <= d <= hi
        assert (m[f"vs_baseline/test/{metric}_diff_ci_low"], m[f"vs_baseline/test/{metric}_diff_ci_high"]) == \
            pytest.approx((lo, hi), abs=1e-6)
    assert result.verdict.startswith(f"MLP - {best} on test (95% paired bootstrap): auroc ")
    # the headline intervals are those of the logged test predictions
    for metric, (lo, hi) in intervals(pred["test_y"].astype(int), p_mlp, 1000, seed=cfg.seed).items():
        assert (m[f"test/{metric}_ci_low"], m[f"test/{metric}_ci_high"]) == pytest.approx((lo, hi), abs=1e-6)
        assert lo <= m[f"test/{metric}"] <= hi or metric == "ece"  # a binned ECE is biased upward


def test_baselines_none_and_no_intervals(make_cfg, client):
    result = train(make_cfg("baselines=none", "baselines.n_resamples=0", *LEAN))
    m = client.get_run(result.run_id).data.metrics
    assert not [k for k in m if k.startswith(("baseline/", "vs_baseline/")) or "_ci_" in k]
    assert result.baselines == [] and result.verdict is None


@pytest.mark.parametrize("override, needle", [
    ("baselines.models.logreg.C=-1", "baseline logreg could not be fitted"),
    ("+baselines.models.svm={}", "baselines.models.svm is unknown"),
    ("+baselines.models.logreg.alpha=1", "baselines.models.logreg.alpha is not an argument of LogisticRegression"),
    ("baselines.n_resamples=50", "baselines.n_resamples=50 must be >= 100"),
])
def test_bad_baselines_are_one_line_and_leave_no_run(make_cfg, client, override, needle):
    cfg = make_cfg(override, *LEAN)
    before = len(run_statuses(client.tracking_uri))
    with pytest.raises((ConfigError, DataError), match=needle) as info:
        train(cfg)
    assert "\n" not in str(info.value)
    assert len(run_statuses(client.tracking_uri)) == before


def test_cv_folds_partition_the_students_and_keep_val_apart():
    y = (np.random.default_rng(0).random(500) < 0.3).astype(np.int64)
    splits = [split_indices(y, 0.15, 0.15, seed=3, cv_folds=5, cv_fold=k) for k in range(5)]
    tests = np.concatenate([s["test"] for s in splits])
    assert sorted(tests.tolist()) == list(range(500))  # every student tested exactly once
    for s in splits:
        assert not set(s["train"]) & set(s["val"]) and not set(s["train"]) & set(s["test"])
        assert not set(s["val"]) & set(s["test"])
        assert len(s["train"]) + len(s["val"]) + len(s["test"]) == 500
        assert abs(len(s["val"]) - 75) <= 2  # ~val_frac of all students
        assert abs(y[s["test"]].mean() - y.mean()) < 0.02  # stratified
    assert split_indices(y, 0.15, 0.15, 3, 5, 2)["test"].tolist() == splits[2]["test"].tolist()  # seeded


def test_cross_validation_parent_and_fold_runs(make_cfg, client):
    cfg = make_cfg("data.n_students=900", "data.cv_folds=3", "trainer.max_epochs=2", "baselines.models.hgb.max_iter=20",
                   *LEAN)
    result = cross_validate(cfg, ["data.cv_folds=3"])
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["cv_folds"] == "3"
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert sorted(k.data.tags["cv_fold"] for k in kids) == ["0", "1", "2"]
    assert {k.data.params["data.cv_fold"] for k in kids} == {"0", "1", "2"}  # each fold reproducible alone
    assert sorted(k.info.run_name for k in kids) == [f"{result.run_name}-fold{i}" for i in range(3)]
    assert {k.info.status for k in kids} == {"FINISHED"}
    for key in ("test/auroc", "val/log_loss", "baseline/logreg/test/auroc", "vs_baseline/test/log_loss_diff"):
        values = [k.data.metrics[key] for k in kids]
        assert parent.data.metrics[key] == pytest.approx(np.mean(values), rel=1e-9)
        assert parent.data.metrics[f"{key}_sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-9)
    # the folds' test rows are disjoint and cover the data set
    total = sum(len(_predictions(client, k.info.run_id)["test_y"]) for k in kids)
    assert total == 900


def test_more_folds_than_students_of_a_class_is_one_line_and_no_run(make_cfg, client, tmp_path):
    from helpers import write_csv

    rows = "\n".join(f"{(i * 7) % 200},{i % 5},{1 if i < 12 else 0}" for i in range(200))
    path = write_csv(tmp_path, "a,b,label\n" + rows + "\n")
    cfg = make_cfg("data=csv", f"data.path={path}", "data.target=label", "data.positive=1", "data.cv_folds=13", *LEAN)
    before = len(run_statuses(client.tracking_uri))
    with pytest.raises(DataError, match=r"data.cv_folds=13 needs at least 13 students of each class, the smaller "
                                        r"class has 12: use data.cv_folds=12 or fewer"):
        cross_validate(cfg)
    assert len(run_statuses(client.tracking_uri)) == before
