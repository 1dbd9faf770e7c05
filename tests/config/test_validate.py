"""validate(cfg), the value checks beyond the schema's types: for every check, a bad value raises
ConfigError with one line naming the key, and the value just inside the boundary passes.

The configs are real compositions, in-process: each group choice (data=csv, loss=mse, ...) is
composed once by Hydra with the structured schema; a case's `key=value` overrides are parsed by
Hydra's own override parser and set on a copy, through the schema's type checks, as compose does.
(Composing every case from scratch costs 0.2 s each, 12 s for this file.)"""

from __future__ import annotations

import ast
import copy
import inspect

import pytest
from helpers import CONF
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from dropout_risk.config import validate as validate_module
from dropout_risk.config.schema import ACTIVATION_NAMES, SCHEMA_VERSION
from dropout_risk.config.validate import validate
from dropout_risk.errors import ConfigError

CSV = ["data=csv", "data.path=students.csv", "data.target=y", "data.positive=1"]

# One entry per `need(...)` in validate(): (the key the message must name, bad overrides (each a
# list, composed on their own), overrides just inside the boundary (each must pass)).
NEED_CASES = [
    pytest.param("data.kind", [["data.kind=parquet"], ["data.kind=Cohort"]],
                 [["data.kind=cohort"], CSV, ["data=uci_dropout", "data.path=x.csv"]], id="data.kind"),
    pytest.param("optim.lr", [["optim.lr=inf"], ["optim.lr=nan"], ["optim.lr=-inf"]], [["optim.lr=1.7e308"]],
                 id="optim.lr-finite"),
    pytest.param("optim.lr", [["optim.lr=0"], ["optim.lr=-1e-3"]], [["optim.lr=1e-300"]], id="optim.lr"),
    pytest.param("optim.weight_decay", [["optim.weight_decay=inf"], ["optim.weight_decay=nan"]],
                 [["optim.weight_decay=1.7e308"]], id="optim.weight_decay-finite"),
    pytest.param("optim.weight_decay", [["optim.weight_decay=-1e-12"]], [["optim.weight_decay=0"]],
                 id="optim.weight_decay"),
    pytest.param("trainer.accelerator", [["trainer.accelerator=tpu"], ["trainer.accelerator=CPU"]],
                 [["trainer.accelerator=cpu"], ["trainer.accelerator=auto"]], id="trainer.accelerator"),
    pytest.param("trainer.progress", [["trainer.progress=bars"], ["trainer.progress=Lines"]],
                 [["trainer.progress=lines"], ["trainer.progress=none"]], id="trainer.progress"),
    pytest.param("trainer.accelerator=cpu", [["trainer.accelerator=gpu"], ["trainer.accelerator=cuda"]],
                 [["trainer.accelerator=cpu"], ["trainer.accelerator=auto"]], id="trainer.accelerator-no-gpu"),
    pytest.param("trainer.max_epochs", [["trainer.max_epochs=0"]], [["trainer.max_epochs=1"]],
                 id="trainer.max_epochs"),
    pytest.param("data.batch_size", [["data.batch_size=0"]], [["data.batch_size=1"]], id="data.batch_size"),
    pytest.param("data.val_frac",
                 [["data.val_frac=0"], ["data.val_frac=1"], ["data.test_frac=0"], ["data.test_frac=1"],
                  ["data.val_frac=-0.1"], ["data.val_frac=0.45", "data.test_frac=0.45"]],
                 [["data.val_frac=1e-9", "data.test_frac=1e-9"], ["data.val_frac=0.45", "data.test_frac=0.44"]],
                 id="data.val_frac+test_frac"),
    pytest.param("model.hidden", [["model.hidden=[]"], ["model.hidden=[16,0]"], ["model.hidden=[-1]"]],
                 [["model.hidden=[1]"], ["model.hidden=[1,1,1]"]], id="model.hidden"),
    pytest.param("loss.name", [["loss.name=hinge"]], [["loss=bce"], ["loss=mse"]], id="loss.name"),
    pytest.param("guard.factor", [["guard.factor=1.0"], ["guard.factor=0.5"]], [["guard.factor=1.000001"]],
                 id="guard.factor"),
    pytest.param("calibration.method", [["calibration.method=platt"]],
                 [["calibration=temperature"], ["calibration=none"]], id="calibration.method"),
    pytest.param("pitfall.pipeline", [["pitfall.pipeline=compare"]],
                 [["pitfall.pipeline=train"], ["pitfall.pipeline=sweep"]], id="pitfall.pipeline"),
    pytest.param("mechanism.every_n_steps", [["mechanism.every_n_steps=-1"]], [["mechanism.every_n_steps=0"]],
                 id="mechanism.every_n_steps"),
    pytest.param("stability.every_n_steps", [["stability.every_n_steps=-1"]], [["stability.every_n_steps=0"]],
                 id="stability.every_n_steps"),
    pytest.param("stability.eval_rows", [["stability.eval_rows=0"]], [["stability.eval_rows=1"]],
                 id="stability.eval_rows"),
    pytest.param("stability.iters", [["stability.iters=0"], ["stability.iters_per_estimate=0"]],
                 [["stability.iters=1", "stability.iters_per_estimate=1"]], id="stability.iters"),
    pytest.param("stability.catapult_margin", [["stability.catapult_margin=0"], ["stability.catapult_margin=-1"]],
                 [["stability.catapult_margin=1e-6"], ["stability.catapult_margin=20"]], id="stability.catapult_margin"),
    pytest.param("tracking.reliability_every_n_epochs", [["tracking.reliability_every_n_epochs=0"]],
                 [["tracking.reliability_every_n_epochs=1"]], id="tracking.reliability_every_n_epochs"),
    pytest.param("tracking.step_metrics_every_n_steps", [["tracking.step_metrics_every_n_steps=0"]],
                 [["tracking.step_metrics_every_n_steps=1"], ["tracking.step_metrics_every_n_steps=5"]],
                 id="tracking.step_metrics_every_n_steps"),
    pytest.param("model.activation", [["model.activation=swish"], ["model.activation=ReLU"]],
                 [[f"model.activation={name}"] for name in ACTIVATION_NAMES], id="model.activation"),
    pytest.param("trainer.early_stopping.patience", [["trainer.early_stopping.patience=0"]],
                 [["trainer.early_stopping.patience=1"]], id="trainer.early_stopping.patience"),
    pytest.param("trainer.early_stopping.min_delta", [["trainer.early_stopping.min_delta=-1e-12"]],
                 [["trainer.early_stopping.min_delta=0"]], id="trainer.early_stopping.min_delta"),
    pytest.param("data.cv_folds", [["data.cv_folds=1"], ["data.cv_folds=-2"]],
                 [["data.cv_folds=0"], ["data.cv_folds=2"]], id="data.cv_folds"),
    pytest.param("data.cv_fold", [["data.cv_fold=0"], ["data.cv_folds=3", "data.cv_fold=3"],
                                  ["data.cv_folds=3", "data.cv_fold=-1"]],
                 [["data.cv_folds=3", "data.cv_fold=0"], ["data.cv_folds=3", "data.cv_fold=2"]], id="data.cv_fold"),
    pytest.param("data.cv_folds", [["sweep=default", "data.cv_folds=5"]], [["sweep=default", "data.cv_folds=0"]],
                 id="data.cv_folds-in-a-sweep"),
    pytest.param("data.path", [["data=csv", "data.target=y", "data.positive=1"], ["data=uci_dropout"],
                               ["data=uci_dropout", "data.path=''"]],
                 [CSV, ["data=uci_dropout", "data.path=x.csv"]], id="data.path"),
    pytest.param("data.target", [["data=csv", "data.path=x.csv", "data.positive=1"],
                                 ["data=csv", "data.path=x.csv", "data.target=''", "data.positive=1"]],
                 [CSV], id="data.target"),
    pytest.param("data.positive", [["data=csv", "data.path=x.csv", "data.target=y"]],
                 [CSV, ["data=csv", "data.path=x.csv", "data.target=y", "data.positive=0"]], id="data.positive"),
]

# validate()'s checks that are not `need(...)` lines.
OTHER_CASES = [
    pytest.param("schema_version", [[f"schema_version={SCHEMA_VERSION + 1}"]], [[f"schema_version={SCHEMA_VERSION}"]],
                 id="schema_version"),
    pytest.param("optim._target_", [["optim._target_=os.system"], ["optim._target_=torch.load"]],
                 [["optim._target_=torch.optim.Adam"]], id="optim._target_"),
]


GROUPS = {p.name for p in CONF.iterdir() if p.is_dir()}


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    """This machine as one without CUDA, whatever it has (tests/config/test_safety.py: with one)."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)


@pytest.fixture(scope="module")
def make_config():
    """make_config("data=csv", "data.path=x.csv", ...) -> the composed config (group choices composed
    by Hydra once per module, value overrides set through the schema on a copy)."""
    parser = OverridesParser.create()
    composed: dict[tuple[str, ...], object] = {}

    def _make(*overrides: str):
        parsed = parser.parse_overrides(list(overrides))
        groups = tuple(o.input_line for o in parsed if o.key_or_group in GROUPS)
        if groups not in composed:
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                composed[groups] = compose("config", overrides=list(groups))
        cfg = copy.deepcopy(composed[groups])
        for o in parsed:
            if o.key_or_group not in GROUPS:
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        return cfg

    return _make


def test_the_shortcut_composes_what_hydra_composes(make_config):
    overrides = ["data=csv", "data.path=x.csv", "data.target=y", "data.positive=0", "model.hidden=[]",
                 "optim.lr=1e-300", "data.val_frac=0.45", "loss=mse"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        full = compose("config", overrides=overrides)
    assert OmegaConf.to_container(make_config(*overrides)) == OmegaConf.to_container(full)
    with pytest.raises(Exception, match="max_epochs"):  # the schema's types still apply
        make_config("trainer.max_epochs=ten")


def _error(cfg) -> str:
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    return str(info.value)


@pytest.mark.parametrize("key, bad, inside", NEED_CASES + OTHER_CASES)
def test_each_check_refuses_the_bad_value_and_passes_the_boundary(make_config, key, bad, inside):
    for overrides in bad:
        message = _error(make_config(*overrides))
        assert "\n" not in message, message
        assert key.split("+")[0] in message, (overrides, message)
    for overrides in inside:
        validate(make_config(*overrides))  # raises if the value just inside the boundary is refused


def test_the_frac_message_names_both_keys(make_config):
    message = _error(make_config("data.val_frac=0.5", "data.test_frac=0.4"))
    assert "data.val_frac=0.5" in message and "data.test_frac=0.4" in message


def test_every_need_line_has_a_case():
    """A new check in validate() gets a case here: count the `need(...)` calls in its source."""
    tree = ast.parse(inspect.getsource(validate_module.validate))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "need"]
    assert len(calls) == len(NEED_CASES), f"{len(calls)} need(...) checks in validate(), {len(NEED_CASES)} cases"
