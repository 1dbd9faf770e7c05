"""The optimiser factory: the `optim` config as a torch optimiser waiting for its parameters."""

from __future__ import annotations

from functools import partial

from omegaconf import DictConfig

from dropout_risk.config.optim_args import optimizer_args
from dropout_risk.config.safety import check_config
from dropout_risk.config.targets import check_targets


def optimizer_factory(optim_cfg: DictConfig) -> partial:
    """The optimiser from config as `partial(cls, **args)`, waiting for the parameters: built from
    the RESOLVED config that was checked (no resolver call, allow-listed target at any depth, the
    constructor's own arguments), never through Hydra's instantiate, which would parse the
    resolved strings as a config again."""
    resolved = check_config(optim_cfg, "optim")
    check_targets(resolved, "optim")
    cls, args = optimizer_args(resolved)
    return partial(cls, **args)
