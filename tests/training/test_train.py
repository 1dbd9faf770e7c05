"""train(cfg) end to end on real parts: the real config, a real MLflow store, Lightning.

Several tests only read one trained run: they share it (`shared`, module scope) so that the
module trains it once. Every test that looks a run up does so by its id or by a tag unique to
the test, never as "the latest run" of the session's store (tests run in random order, and in
parallel with pytest-xdist).
"""

from __future__ import annotations

import math
import signal
import uuid
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from helpers import ARTIFACTS, CONF, TINY, run_statuses
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from omegaconf import OmegaConf

from dropout_risk.analysis.calibration import apply_temperature, fit_temperature
from dropout_risk.analysis.metrics import binary_metrics, truth_metrics
from dropout_risk.analysis.smece import smece
from dropout_risk.data.loaders import load_data
from dropout_risk.data.module import StudentDataModule
from dropout_risk.errors import ConfigError
from dropout_risk.model.mlp import MLP
from dropout_risk.training.evaluate import CALIBRATED
from dropout_risk.training.train import train

# What a test that does not look at the post-fit figures and pages can skip: they cost most of a
# tiny run's time (the final reliability diagram is still drawn).
LEAN = ("mechanism.figure=false", "mechanism.page=false", "calibration.figure=false",
        "tracking.reliability_every_n_epochs=1000")

# The run most tests here read: big enough to learn (validation loss falls, AUROC well above
# chance) and to give a temperature inside its bounds (T = 1e3 or 1e-3 would be a clamp that
# many wrong fits share).
SHARED = ("trainer.max_epochs=8", "data.n_students=3000", *ARTIFACTS)
SHARED_STEPS = 8 * math.ceil(round(3000 * 0.7) / 128)  # 8 epochs x 17 batches of the 2100 training rows

# The forced divergence: SGD with lr 1e4 on TINY (840 training rows, batches of 128: 7 steps an
# epoch), 5 epochs. Trained through, it takes all 35 steps.
DIVERGE = ("optim=sgd", "optim.lr=1e4", "trainer.max_epochs=5")
DIVERGE_FULL_STEPS = 5 * math.ceil(round(1200 * 0.7) / 128)


def _compose(store, *overrides: str):
    """make_cfg for fixtures wider than one test (the same composition as conftest.make_cfg)."""
    base = [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*TINY, *base, *overrides])


@pytest.fixture(scope="module")
def shared(store):
    """One trained run, read by several tests; with its data module rebuilt from the config and
    its logged predictions."""
    cfg = _compose(store, *SHARED)
    result = train(cfg, overrides=list(SHARED))
    client = MlflowClient(tracking_uri=store["uri"])
    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    pred = dict(np.load(client.download_artifacts(result.run_id, "predictions/predictions.npz")))
    return SimpleNamespace(cfg=cfg, result=result, client=client, run=client.get_run(result.run_id), dm=dm, pred=pred)


def _runs_tagged(client, key: str, value: str):
    exp = client.get_experiment_by_name("dropout-risk")
    return client.search_runs([exp.experiment_id], f"tags.{key} = '{value}'")


def test_train_logs_everything_to_mlflow(shared):
    result, run, client = shared.result, shared.run, shared.client
    assert run.info.status == "FINISHED"
    assert run.data.tags["outcome"] == "converged" == result.outcome
    assert run.data.tags["seed"] == "0"
    assert run.data.tags["git_commit"]
    assert run.data.tags["version.torch"].startswith("2.")
    # params: the flattened resolved config
    assert float(run.data.params["optim.lr"]) == pytest.approx(1e-3)
    assert run.data.params["model.hidden"] == "[16, 8]"
    assert run.data.params["trainer.max_epochs"] == "8"
    # metric names of DESIGN.md, final values equal to the returned result
    for key in ("val/loss", "val/auroc", "val/auprc", "val/brier", "val/ece", "val/ece_adaptive",
                "val/mce", "val/accuracy", "test/auroc", "val/ece_true", "time/fit_s", "train/loss_epoch"):
        assert key in run.data.metrics, key
    assert run.data.metrics["val/auroc"] == pytest.approx(result.metrics["val/auroc"])
    assert run.data.metrics["epochs_completed"] == 8
    # per-step training loss, one point per optimiser step
    steps = client.get_metric_history(result.run_id, "train/loss")
    assert len(steps) == SHARED_STEPS
    assert [m.step for m in steps] == list(range(1, len(steps) + 1))
    assert np.allclose([m.value for m in steps], result.train_loss)
    # per-epoch validation history, then the final value at the last epoch's step
    assert [m.step for m in client.get_metric_history(result.run_id, "val/loss")] == [*range(1, 9), 8]
    # artifacts: config, overrides, final reliability diagram, weights; an image per epoch
    files = {f.path for f in client.list_artifacts(result.run_id)}
    assert {"config", "plots", "model", "predictions", "mechanism"} <= files
    local = client.download_artifacts(result.run_id, "config")
    cfg_back = yaml.safe_load(open(f"{local}/config.yaml"))
    assert cfg_back["trainer"]["max_epochs"] == 8 and cfg_back["seed"] == 0
    assert cfg_back["data"]["n_students"] == 3000
    assert yaml.safe_load(open(f"{local}/overrides.yaml")) == list(SHARED)
    assert {f.path for f in client.list_artifacts(result.run_id, "plots")} == {
        "plots/reliability_val.png", "plots/reliability_calibration.png", "plots/backprop_flow.png"}
    # final predictions, for reports that redraw without re-running
    pred = shared.pred
    assert len(pred["val_y"]) == len(pred["val_logit"]) == len(pred["val_p_true"]) == len(shared.dm.splits["val"])
    assert len(pred["test_y"]) == len(pred["test_logit"]) == len(shared.dm.splits["test"])
    np.testing.assert_array_equal(pred["val_y"], shared.dm.tensors["val"][1].numpy())
    # temperature scaling: reported for val and test (its values: the two temperature tests below)
    for key in ("temperature", "val/log_loss_calibrated", "test/ece_calibrated", "val/ece_true_calibrated"):
        assert key in run.data.metrics, key
    images = client.list_artifacts(result.run_id, "images")
    steps_logged = {f.path.split("+step+")[1].split("+")[0] for f in images if f.path.endswith(".png")}
    assert steps_logged == {str(epoch) for epoch in range(1, 9)}  # reliability_every_n_epochs=1


def test_validation_metrics_improve_and_beat_chance(shared):
    hist = shared.result.val_history
    assert len(hist) == 8
    assert hist[-1]["val/loss"] < hist[0]["val/loss"]
    assert shared.result.metrics["val/auroc"] > 0.75
    # the Bayes-optimal predictor bounds what the model can do on the same split
    assert shared.result.metrics["test/excess_log_loss"] > -0.02


def test_temperature_is_fitted_on_the_validation_split(shared):
    """The logged T is exactly the one fitted on the run's own validation logits, and not the
    one the test split would give."""
    pred, logged = shared.pred, shared.run.data.metrics["temperature"]
    t_val = fit_temperature(pred["val_logit"], pred["val_y"].astype(np.int64))
    t_test = fit_temperature(pred["test_logit"], pred["test_y"].astype(np.int64))
    assert logged == t_val  # the same float32 logits, the same deterministic fit
    assert 1e-3 < t_val < 1e3  # inside the bounds: a real minimiser, not the clamp
    assert abs(t_val - t_test) > 0.02 * t_val, (t_val, t_test)  # so a test-split fit would show


def test_calibrated_metrics_are_the_temperature_scaled_ones(shared):
    """val/*_calibrated and test/*_calibrated are the metrics of sigmoid(logit / T) with the
    logged T, recomputed here from the logged logits, and differ from the uncalibrated ones."""
    metrics, pred, dm = shared.run.data.metrics, shared.pred, shared.dm
    t = metrics["temperature"]
    for split in ("val", "test"):
        y = pred[f"{split}_y"].astype(np.int64)
        p = apply_temperature(pred[f"{split}_logit"], t)
        expected = {**binary_metrics(y, p), "smece": smece(y, p), **truth_metrics(y, p, dm.p_true(split))}
        assert {k for k in metrics if k.startswith(f"{split}/") and k.endswith("_calibrated")} == {
            f"{split}/{k}_calibrated" for k in CALIBRATED}
        for k in CALIBRATED:
            assert metrics[f"{split}/{k}_calibrated"] == pytest.approx(expected[k], rel=1e-9, abs=1e-12), (split, k)
        # the uncalibrated metrics are those of T = 1, and T changed them
        raw = binary_metrics(y, apply_temperature(pred[f"{split}_logit"], 1.0))
        assert metrics[f"{split}/log_loss"] == pytest.approx(raw["log_loss"], rel=1e-9)
        assert abs(metrics[f"{split}/log_loss_calibrated"] - raw["log_loss"]) > 1e-3
    # T minimises validation log loss, so it cannot make it worse (here: it clearly improves it)
    assert metrics["val/log_loss_calibrated"] < metrics["val/log_loss"] - 1e-3


def test_saved_model_predicts_the_logged_logits(shared):
    """model/model.pt is enough to predict: the MLP rebuilt from its config and state_dict, fed
    the run's own validation rows standardised with the saved mean and std, gives the logged
    validation logits."""
    path = shared.client.download_artifacts(shared.result.run_id, "model/model.pt")
    saved = torch.load(path, weights_only=False)
    cfg = OmegaConf.create(saved["config"])
    net = MLP(len(saved["feature_names"]), list(cfg.model.hidden), cfg.model.activation)
    net.load_state_dict(saved["state_dict"])
    net.eval()
    # the validation rows, raw, from the data the saved config describes
    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    raw = dm.data.features.iloc[dm.splits["val"]][saved["feature_names"]].to_numpy(dtype=np.float64)
    x = torch.from_numpy((raw - saved["mean"]) / saved["std"]).float()
    with torch.no_grad():
        logits = net(x).numpy()
    np.testing.assert_allclose(logits, shared.pred["val_logit"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(dm.data.y[dm.splits["val"]], shared.pred["val_y"])


def test_forced_divergence_stops_at_the_first_bad_step(make_cfg, client):
    result = train(make_cfg(*DIVERGE, *ARTIFACTS))
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["outcome"] == "diverged"
    step = int(run.data.tags["diverged_at_step"])
    assert step == result.diverged_at_step
    losses = result.train_loss
    first_bad = next(i + 1 for i, v in enumerate(losses) if not math.isfinite(v) or v > 10 * losses[0])
    # the reported step is the first bad one, and training stopped there: a guard that let
    # training go on would record all 35 steps (and report the last bad one)
    assert step == first_bad
    assert len(losses) == step < DIVERGE_FULL_STEPS
    assert run.data.metrics["epochs_completed"] == math.ceil(step / 7)
    assert len(client.get_metric_history(result.run_id, "train/loss")) == step
    assert run.data.tags["diverged_reason"] == (
        f"loss {losses[step - 1]:.4g} > 10 x first loss {losses[0]:.4g} at step {step}")
    # with every default artifact on, the diverged run still drew its figures
    assert {f.path for f in client.list_artifacts(result.run_id, "plots")} == {
        "plots/reliability_val.png", "plots/reliability_calibration.png", "plots/backprop_flow.png"}


class _PoisonWeights(pl.Callback):
    """After step `at`, fill the output layer's weights with NaN: the next loss is NaN (not large)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            with torch.no_grad():
                pl_module.net.out.weight.fill_(float("nan"))


def test_nan_loss_stops_training_with_its_reason(make_cfg, client):
    result = train(make_cfg(*LEAN), callbacks=[_PoisonWeights(at=2)])
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert result.outcome == run.data.tags["outcome"] == "diverged"
    assert result.diverged_at_step == int(run.data.tags["diverged_at_step"]) == 3
    assert run.data.tags["diverged_reason"] == "loss became nan at step 3"
    assert len(result.train_loss) == 3 and math.isnan(result.train_loss[2])
    assert all(math.isfinite(v) for v in result.train_loss[:2])


def test_guard_disabled_trains_through_a_divergence(make_cfg, client):
    result = train(make_cfg(*DIVERGE, "guard.enabled=false", *LEAN))
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    losses = result.train_loss
    assert losses[1] > 10 * losses[0]  # the loss blew up at step 2, as with the guard on
    assert len(losses) == DIVERGE_FULL_STEPS  # and training went on to the end
    assert run.data.metrics["epochs_completed"] == 5
    assert result.outcome == run.data.tags["outcome"] == "converged"
    assert result.diverged_at_step is None
    assert "diverged_at_step" not in run.data.tags and "diverged_reason" not in run.data.tags


def test_calibration_none_logs_no_temperature(make_cfg, client):
    # calibration.figure=true too: without a temperature there is no "after" to draw
    result = train(make_cfg("calibration=none", "calibration.figure=true", "tracking.figures=true", "mechanism.figure=false",
                            "mechanism.page=false", "tracking.reliability_every_n_epochs=1000"))
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert "val/log_loss" in run.data.metrics and "test/ece" in run.data.metrics
    assert not [k for k in run.data.metrics if "calibrated" in k or k == "temperature"]
    assert not [k for k in result.metrics if "calibrated" in k or k == "temperature"]
    assert {f.path for f in client.list_artifacts(result.run_id, "plots")} == {"plots/reliability_val.png"}


class _CtrlC(pl.Callback):
    """Ctrl-C in the middle of fit: KeyboardInterrupt raised at the end of step `at`."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            raise KeyboardInterrupt


def test_ctrl_c_during_fit_ends_the_run_killed(make_cfg, client):
    case = uuid.uuid4().hex
    handler = signal.getsignal(signal.SIGINT)
    # Lightning catches the KeyboardInterrupt, shuts down and calls sys.exit(1): train() ends
    # the run and lets the interruption propagate
    with pytest.raises((KeyboardInterrupt, SystemExit)) as info:
        train(make_cfg(*LEAN, f"+tags.test_case={case}"), callbacks=[_CtrlC(at=4)])
    (run,) = _runs_tagged(client, "test_case", case)
    assert run.info.status == "KILLED"
    assert run.data.tags["outcome"] == "failed"
    assert run.data.tags["error"] == f"interrupted ({type(info.value).__name__})"
    assert run.data.tags["interrupted"] == "true"
    assert "weights_sha256" not in run.data.tags  # it never got to the end
    # Ctrl-C works again afterwards (Lightning ignores SIGINT once it has caught one)
    assert signal.getsignal(signal.SIGINT) is handler


def test_same_seed_same_weights(make_cfg):
    a = train(make_cfg("seed=3", *LEAN))
    b = train(make_cfg("seed=3", *LEAN))
    c = train(make_cfg("seed=4", *LEAN))
    assert a.weights_sha256 == b.weights_sha256
    assert a.metrics["val/loss"] == b.metrics["val/loss"]
    assert a.train_loss == b.train_loss
    assert c.weights_sha256 != a.weights_sha256


def test_mse_loss_and_sgd_train(make_cfg):
    result = train(make_cfg("loss=mse", "optim=sgd", "optim.lr=0.5", "trainer.max_epochs=4", *LEAN))
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
    import dropout_risk.training.report as mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mod, "log_reliability", boom)
    case = uuid.uuid4().hex  # this test's run, whatever else the session's store holds
    with pytest.raises(RuntimeError, match="disk full"):
        train(make_cfg("tracking.figures=true", "mechanism.figure=false", f"+tags.test_case={case}"))
    (run,) = _runs_tagged(client, "test_case", case)
    assert run.info.status == "FAILED"
    assert run.data.tags["outcome"] == "failed"
    assert "disk full" in run.data.tags["error"]
    # nothing this test started is left RUNNING (other tests' runs share the session's store)
    assert not client.search_runs([run.info.experiment_id],
                                  f"attributes.status = 'RUNNING' and tags.test_case = '{case}'")


def _count_runs(client) -> int:
    return len(run_statuses(client.tracking_uri))
