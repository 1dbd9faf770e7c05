"""The `optim` config as the optimiser will see it: its class (allow-listed), its arguments
(checked against the constructor's signature and values), and the keys that are ours, not its.
The optimiser factory (model/optim.py) builds exactly what `optimizer_args` returns."""

from __future__ import annotations

import inspect
from typing import Any

from dropout_risk.errors import ConfigError

# Keys of the optim config that are ours, not the optimiser's (see OptimConfig).
NOT_OPTIMIZER_ARGS = ("zero_grad", "scan_range")
# Hydra's keys that the config keeps: the target, and _partial_ (the parameters come later).
_HYDRA_KEYS = ("_target_", "_partial_")
# The arguments the optimiser options (conf/optim/*.yaml) set: one left over from another optimiser
# means its `_target_` was changed alone.
_CONFIG_OPTIMIZER_ARGS = ("betas", "eps", "momentum", "nesterov")


def optimizer_class(target: str):
    """The torch optimiser class an allow-listed `optim._target_` names."""
    import torch.optim

    return getattr(torch.optim, target.rpartition(".")[2])


def optimizer_args(optim: dict[str, Any], path: str = "optim") -> tuple[type, dict[str, Any]]:
    """(the optimiser class, its keyword arguments) from a RESOLVED optim config whose `_target_`
    passed the allow-list. Raises ConfigError (one line naming the key) for a key the constructor
    does not take, `_partial_` other than true, or values the constructor refuses (tried on one
    dummy parameter, so it fails here rather than inside the run)."""
    import torch

    cls, args = optimizer_keys(optim, path)
    try:
        cls([torch.nn.Parameter(torch.zeros(1))], **args)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ConfigError(f"{path}: {target_of(optim)} refuses these arguments ({first}); fix the value in {path}") from None
    return cls, args


def target_of(optim: dict[str, Any]) -> str:
    return str(optim.get("_target_"))


def optimizer_keys(optim: dict[str, Any], path: str = "optim") -> tuple[type, dict[str, Any]]:
    """(the optimiser class, its keyword arguments) with every key checked against the
    constructor's signature (and `_partial_`), the values not yet: the part of `optimizer_args`
    that holds for every job of a multirun alike."""
    target = target_of(optim)
    cls = optimizer_class(target)
    if optim.get("_partial_", True) is not True:
        raise ConfigError(f"{path}._partial_={optim.get('_partial_')!r}: the optimiser is built later with the "
                          f"model's parameters; set {path}._partial_=true")
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p not in ("self", "params")]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    args = {k: v for k, v in optim.items() if k not in NOT_OPTIMIZER_ARGS and k not in _HYDRA_KEYS}
    for key in args:
        if key not in accepted and not takes_any:
            option = cls.__name__.lower()
            switch = (f"; to switch optimiser, choose optim={option}, which brings its own keys ({path}._target_=... "
                      "alone keeps the old optimiser's)"
                      if option in ("sgd", "adamw") and key in _CONFIG_OPTIMIZER_ARGS else "")
            raise ConfigError(f"{path}.{key} is not an argument of {target}: remove it ({'~' + path}.{key}) or use one "
                              f"of {', '.join(accepted)}{switch}")
    return cls, args
