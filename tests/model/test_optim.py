"""optimizer_factory: the optimiser is built from the resolved config that was checked, as
`partial(cls, **args)`; a string that would resolve again (Hydra's instantiate re-reads a resolved
container as a config) or a resolver call never reaches it."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from helpers import CONF
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dropout_risk.errors import ConfigError
from dropout_risk.model.optim import optimizer_factory


@pytest.mark.parametrize("option, cls, args", [
    ("adamw", torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.01, "fused": True, "betas": [0.9, 0.999], "eps": 1e-8}),
    ("sgd", torch.optim.SGD, {"lr": 0.1, "weight_decay": 0.0, "fused": True, "momentum": 0.0, "nesterov": False}),
])
def test_the_optimiser_is_its_class_with_the_configs_own_arguments(option, cls, args):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"optim={option}"])
    factory = optimizer_factory(cfg.optim)
    assert isinstance(factory, partial) and factory.func is cls
    assert factory.keywords == args  # zero_grad, scan_range, _target_ and _partial_ are ours
    opt = factory([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == args["lr"]


def _attack(tmp_path) -> str:
    return "{_target_: shutil.copyfile, _args_: [/etc/hostname, " + str(tmp_path / "copied") + "]}"


def test_an_escaped_interpolation_is_not_resolved_a_second_time(tmp_path):
    """`\\${oc.create:...}` resolves to the text `${oc.create:...}`, which Hydra's instantiate would
    have parsed and resolved (building the target): refused, nothing built."""
    optim = OmegaConf.create({"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.1,
                              "foreach": "\\${oc.create:'" + _attack(tmp_path) + "'}"})
    with pytest.raises(ConfigError, match=r"optim\.foreach=.* would be read as an interpolation"):
        optimizer_factory(optim)
    assert not (tmp_path / "copied").exists()


def test_a_resolver_in_the_optim_config_is_refused_before_resolution(tmp_path):
    optim = OmegaConf.create({"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.1,
                              "extra": "${oc.create:'" + _attack(tmp_path) + "'}"})
    with pytest.raises(ConfigError, match=r"^configs are data: \$\{oc\.create:\.\.\.\} at optim\.extra is not allowed"):
        optimizer_factory(optim)
    assert not (tmp_path / "copied").exists()
