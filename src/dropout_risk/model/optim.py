"""The optimiser factory: the `optim` config as a torch optimiser waiting for its parameters."""

from __future__ import annotations

from functools import partial

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dropout_risk.config.targets import check_targets

# Keys of the optim config that are ours, not the optimiser's.
_NOT_OPTIMIZER_ARGS = ("zero_grad", "scan_range")


def optimizer_factory(optim_cfg: DictConfig) -> partial:
    """The `_partial_` optimiser from config (allow-listed target), minus our own keys."""
    check_targets(optim_cfg, "optim")
    args = OmegaConf.to_container(optim_cfg, resolve=True)
    for key in _NOT_OPTIMIZER_ARGS:
        args.pop(key, None)
    args["_partial_"] = True
    return instantiate(args)
