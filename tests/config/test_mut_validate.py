"""validate() and check_pipeline(): the cases mutation testing showed unguarded (docs/testing.md):
whole messages, a config without schema_version, and which pipeline a pitfall preset belongs to.
Configs are real Hydra compositions (one per group choice, copied per case)."""

from __future__ import annotations

import copy
from dataclasses import fields

import pytest
from helpers import CONF
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from dropout_risk.config import validate as validate_module
from dropout_risk.config.schema import ACTIVATION_NAMES, Config, OptimConfig
from dropout_risk.config.validate import check_known_keys, check_pipeline, validate
from dropout_risk.errors import ConfigError

_COMPOSED: dict[tuple[str, ...], object] = {}


def _cfg(*groups: str, **values):
    """The composed config for these group choices (composed once), with `values` set on a copy."""
    if groups not in _COMPOSED:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            _COMPOSED[groups] = compose("config", overrides=list(groups))
    cfg = copy.deepcopy(_COMPOSED[groups])
    for key, value in values.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, merge=True)
    return cfg


def _message(cfg) -> str:
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    return str(info.value)


def test_whole_messages() -> None:
    assert _message(_cfg(tracking__reliability_every_n_epochs=0)) == "tracking.reliability_every_n_epochs must be >= 1"
    assert _message(_cfg(model__activation="swish")) == (
        "model.activation='swish' is unknown: use one of " + ", ".join(ACTIVATION_NAMES))
    assert ", ".join(ACTIVATION_NAMES).startswith("relu, sigmoid, ")
    assert _message(_cfg("data=csv", data__path="x.csv", data__positive=1)) == (
        "data=csv needs the label column: pass data.target=COLUMN")
    assert _message(_cfg("data=csv", data__path="x.csv", data__target="y")) == (
        "data=csv needs the positive label: pass data.positive=VALUE")


def test_a_config_without_schema_version_is_read_as_the_current_one() -> None:
    cfg = _cfg()
    with open_dict(cfg):
        del cfg["schema_version"]
    assert "schema_version" not in cfg
    validate(cfg)  # raises if a missing version is not taken as the current one


def test_a_pitfall_preset_runs_only_from_its_own_pipeline() -> None:
    sweep_preset = _cfg("experiment=pitfall_lr_divergence")
    check_pipeline(sweep_preset, "sweep")
    with pytest.raises(ConfigError) as info:
        check_pipeline(sweep_preset, "train")
    from dropout_risk.config.paths import pipeline_command

    assert str(info.value) == ("experiment=pitfall_lr_divergence is a sweep preset: run "
                               + pipeline_command("sweep.py", "experiment=pitfall_lr_divergence"))
    assert pipeline_command("sweep.py", "a=1").endswith("python pipelines/sweep.py a=1")
    train_preset = _cfg("experiment=pitfall_no_zero_grad")
    check_pipeline(train_preset, "train")
    with pytest.raises(ConfigError, match="^experiment=pitfall_no_zero_grad is a train preset"):
        check_pipeline(train_preset, "sweep")


def test_no_pitfall_runs_from_any_pipeline() -> None:
    cfg = _cfg()
    assert not cfg.pitfall.name
    for pipeline in ("train", "sweep", "compare"):
        check_pipeline(cfg, pipeline)


def test_early_stopping_and_cross_validation_whole_messages() -> None:
    assert _message(_cfg(trainer__early_stopping__patience=0)) == (
        "trainer.early_stopping.patience=0 must be >= 1 "
        "(trainer.early_stopping.enabled=false turns early stopping off)")
    assert _message(_cfg(data__cv_folds=3, data__cv_fold=3)) == (
        "data.cv_fold=3 must be one of 0..2 of data.cv_folds=3")
    assert _message(_cfg(data__cv_folds=2, data__cv_fold=2)) == (
        "data.cv_fold=2 must be one of 0..1 of data.cv_folds=2")
    assert _message(_cfg(data__cv_fold=0)) == "data.cv_fold=0 needs data.cv_folds=K >= 2 (or data.cv_fold=null)"


def test_two_folds_is_the_smallest_cross_validation() -> None:
    for fold in (0, 1):
        validate(_cfg(data__cv_folds=2, data__cv_fold=fold))


def test_trainer_accelerator_whole_messages(monkeypatch) -> None:
    assert _message(_cfg(trainer__accelerator="tpu")) == (
        "trainer.accelerator='tpu' is unknown: use one of cpu, gpu, cuda, auto")
    monkeypatch.setattr(validate_module, "cuda_available", lambda: False)
    assert _message(_cfg(trainer__accelerator="gpu")) == (
        "trainer.accelerator=gpu: this machine has no CUDA GPU (torch.cuda.is_available() is false); "
        "pass trainer.accelerator=cpu")


def _unknown(node: dict, *args) -> str:
    with pytest.raises(ConfigError) as info:
        check_known_keys(node, *args)
    return str(info.value)


def test_an_unknown_key_is_named_with_the_closest_known_one() -> None:
    assert _unknown({"seed": 1, "sed": 1}) == (
        "unknown config key 'sed': did you mean seed?; a value of your own goes under tags (+tags.sed=...)")
    # nested: the full dotted path, and no tags hint (tags hold top-level values only)
    assert _unknown({"data": {"kind": "csv", "n_student": 5}}) == (
        "unknown config key 'data.n_student': did you mean data.n_students?")
    # an optional group (`sweep: SweepConfig | None`) is checked too
    assert _unknown({"sweep": {"n_scann": 3}}) == "unknown config key 'sweep.n_scann': did you mean sweep.n_scan?"


def test_an_unknown_key_without_a_close_one_lists_the_keys_there() -> None:
    keys = ", ".join(f.name for f in fields(Config))
    assert keys.startswith("schema_version, seed, data, ")
    assert _unknown({"zzzz": 1}) == (
        f"unknown config key 'zzzz': keys here: {keys}; a value of your own goes under tags (+tags.zzzz=...)")
    # Hydra's _target_ and _partial_ are not keys to suggest
    assert _unknown({"qqqq": 1}, OptimConfig, "optim") == (
        "unknown config key 'optim.qqqq': keys here: lr, weight_decay, fused, zero_grad, scan_range")


def test_known_keys_and_free_form_groups_pass() -> None:
    check_known_keys({"seed": 1, "data": {"kind": "csv"}, "tags": {"anything": "x"}, "sweep": None,
                      "optim": {"betas": [0.9, 0.99]}})  # optim: checked against its optimiser instead
