"""train(cfg) end to end on real parts: the real config, a real MLflow store, Lightning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from dropout_risk.errors import ConfigError
from dropout_risk.training.train import train


def test_train_logs_everything_to_mlflow(make_cfg, client):
    cfg = make_cfg("trainer.max_epochs=3")
    result = train(cfg, overrides=["trainer.max_epochs=3"])
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["outcome"] == "converged" == result.outcome
    assert run.data.tags["seed"] == "0"
    assert run.data.tags["git_commit"]
    assert run.data.tags["version.torch"].startswith("2.")
    # params: the flattened resolved config
    assert float(run.data.params["optim.lr"]) == pytest.approx(1e-3)
    assert run.data.params["model.hidden"] == "[16, 8]"
    # metric names of DESIGN.md, final values equal to the returned result
    for key in ("val/loss", "val/auroc", "val/auprc", "val/brier", "val/ece", "val/ece_adaptive",
                "val/mce", "val/accuracy", "test/auroc", "val/ece_true", "time/fit_s", "train/loss_epoch"):
        assert key in run.data.metrics, key
    assert run.data.metrics["val/auroc"] == pytest.approx(result.metrics["val/auroc"])
    # per-step training loss, one point per optimiser step
    steps = client.get_metric_history(result.run_id, "train/loss")
    n_train = 1200 * 0.7
    assert len(steps) == 3 * math.ceil(round(n_train) / 128)
    assert [m.step for m in steps] == list(range(1, len(steps) + 1))
    assert np.allclose([m.value for m in steps], result.train_loss)
    # per-epoch validation history
    assert [m.step for m in client.get_metric_history(result.run_id, "val/loss")][:3] == [1, 2, 3]
    # artifacts: config, overrides, final reliability diagram, weights; images at >= 2 steps
    files = {f.path for f in client.list_artifacts(result.run_id)}
    assert {"config", "plots", "model"} <= files
    local = client.download_artifacts(result.run_id, "config")
    cfg_back = yaml.safe_load(open(f"{local}/config.yaml"))
    assert cfg_back["trainer"]["max_epochs"] == 3 and cfg_back["seed"] == 0
    assert yaml.safe_load(open(f"{local}/overrides.yaml")) == ["trainer.max_epochs=3"]
    assert {f.path for f in client.list_artifacts(result.run_id, "plots")} == {
        "plots/reliability_val.png", "plots/reliability_calibration.png", "plots/backprop_flow.png"}
    # final predictions, for reports that redraw without re-running
    pred = np.load(client.download_artifacts(result.run_id, "predictions/predictions.npz"))
    assert len(pred["val_y"]) == len(pred["val_logit"]) == len(pred["val_p_true"])
    # temperature scaling: fitted on validation, reported for val and test
    assert run.data.metrics["temperature"] > 0
    for key in ("val/log_loss_calibrated", "test/ece_calibrated", "val/ece_true_calibrated"):
        assert key in run.data.metrics, key
    # T minimises validation log loss, so it cannot make it worse
    assert run.data.metrics["val/log_loss_calibrated"] <= run.data.metrics["val/log_loss"] + 1e-9
    images = client.list_artifacts(result.run_id, "images")
    steps_logged = {f.path.split("+step+")[1].split("+")[0] for f in images if f.path.endswith(".png")}
    assert len(steps_logged) >= 2


def test_validation_metrics_improve_and_beat_chance(make_cfg):
    result = train(make_cfg("trainer.max_epochs=8", "data.n_students=3000"))
    hist = result.val_history
    assert hist[-1]["val/loss"] < hist[0]["val/loss"]
    assert result.metrics["val/auroc"] > 0.75
    # the Bayes-optimal predictor bounds what the model can do on the same split
    assert result.metrics["test/excess_log_loss"] > -0.02


def test_forced_divergence_is_a_finished_run(make_cfg, client):
    result = train(make_cfg("optim=sgd", "optim.lr=1e4", "trainer.max_epochs=5"))
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["outcome"] == "diverged"
    step = int(run.data.tags["diverged_at_step"])
    assert step == result.diverged_at_step and step >= 1
    # training stopped at that step: no more losses were recorded after it
    assert len(result.train_loss) == step


def test_same_seed_same_weights(make_cfg):
    a = train(make_cfg("seed=3"))
    b = train(make_cfg("seed=3"))
    c = train(make_cfg("seed=4"))
    assert a.weights_sha256 == b.weights_sha256
    assert a.metrics["val/loss"] == b.metrics["val/loss"]
    assert c.weights_sha256 != a.weights_sha256


def test_mse_loss_and_sgd_train(make_cfg):
    result = train(make_cfg("loss=mse", "optim=sgd", "optim.lr=0.5", "trainer.max_epochs=4"))
    assert result.outcome == "converged"
    assert result.metrics["val/auroc"] > 0.6


@pytest.mark.parametrize(
    "override, needle",
    [
        ("optim.lr=-0.1", "optim.lr"),
        ("optim.lr=0", "optim.lr"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("optim._target_=os.system", "not allowed"),
        ("optim._target_=builtins.eval", "not allowed"),
        ("model.activation=softmax2", "model.activation"),
        ("model.hidden=[]", "model.hidden"),
    ],
)
def test_bad_config_values_fail_before_any_run(make_cfg, client, store, override, needle):
    before = _count_runs(client)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")) as info:
        train(make_cfg(override))
    assert "\n" not in str(info.value)
    assert _count_runs(client) == before


def test_newer_schema_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="newer"):
        train(make_cfg("schema_version=99"))


def test_failure_after_start_ends_failed(make_cfg, client, monkeypatch):
    import dropout_risk.training.train as mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mod, "log_reliability", boom)
    with pytest.raises(RuntimeError):
        train(make_cfg(tiny=True))
    runs = client.search_runs([client.get_experiment_by_name("dropout-risk").experiment_id],
                              order_by=["attributes.start_time DESC"], max_results=1)
    assert runs[0].info.status == "FAILED"
    assert "disk full" in runs[0].data.tags["error"]
    assert not client.search_runs([runs[0].info.experiment_id], "attributes.status = 'RUNNING'")


def _count_runs(client) -> int:
    exp = client.get_experiment_by_name("dropout-risk")
    return 0 if exp is None else len(client.search_runs([exp.experiment_id], max_results=1000))
