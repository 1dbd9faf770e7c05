"""conftest.compose_fast (the tests' make_cfg) gives what Hydra's compose gives, for the kinds of
overrides tests use: value overrides on the defaults, group choices, a preset, added keys and the
sweep app; and Hydra's own errors for what compose refuses."""

from __future__ import annotations

import pytest
from conftest import compose_fast
from helpers import CONF, TINY
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CASES = [
    ("config", [*TINY, "optim.lr=0.3", "model.hidden=[64,32]"]),
    ("config", ["optim=sgd", "optim.lr=0.3", "optim.momentum=0.9", "loss=mse", "data=csv", "data.path=x.csv"]),
    ("config", ["experiment=pitfall_loss_only", "trainer.max_epochs=3"]),
    ("config", ["+tags.case=x", "++seed=4", "tracking.run_name=null", "calibration=none"]),
    ("sweep", [*TINY, "sweep.n_scan=3", "optim=sgd", "sweep.storage=journal:///tmp/j.log"]),
    ("sweep", ["experiment=pitfall_lr_divergence", "sweep.seeds=2"]),
]


@pytest.mark.parametrize("config, overrides", CASES)
def test_the_same_config_as_hydra_compose(config, overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        full = compose(config, overrides=overrides)
    fast = compose_fast(config, overrides)
    assert OmegaConf.to_container(fast) == OmegaConf.to_container(full)
    assert OmegaConf.is_struct(fast) == OmegaConf.is_struct(full)
    assert compose_fast(config, overrides) is not fast  # a copy each time: tests may change theirs


@pytest.mark.parametrize("bad", [["optim.lrr=1"], ["trainer.max_epochs=ten"], ["optim=adam"], ["tags.x=1"]])
def test_what_compose_refuses_it_refuses_with_hydras_error(bad):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"), pytest.raises(Exception) as full:
        compose("config", overrides=bad)
    with pytest.raises(type(full.value)) as fast:
        compose_fast("config", bad)
    assert str(fast.value) == str(full.value)
