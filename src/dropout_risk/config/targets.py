"""The `_target_` allow-list. A config is data: reproducing a config someone sent you must not
run arbitrary code, so every `_target_` must name a torch optimiser, a torch activation or this package."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from omegaconf import DictConfig, ListConfig

from dropout_risk.errors import ConfigError


def _is_allowed_target(target: str) -> bool:
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        return False
    if module_name == "torch.optim":
        import torch.optim

        obj = getattr(torch.optim, attr, None)
        return inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)
    if module_name == "torch.nn":
        import torch.nn.modules.activation as act

        obj = getattr(act, attr, None)
        return inspect.isclass(obj) and obj.__module__ == act.__name__
    if target.startswith("dropout_risk."):
        try:
            obj = getattr(importlib.import_module(module_name), attr, None)
        except ImportError:
            return False
        return obj is not None
    return False


def check_targets(node: Any, path: str = "") -> None:
    """Raise ConfigError for the first `_target_` outside the allow-list."""
    if isinstance(node, DictConfig):
        if node._is_none() or node._is_missing():
            return
        items = node.items_ex(resolve=False)
    elif isinstance(node, dict):
        items = node.items()
    elif isinstance(node, ListConfig | list):
        items = ((str(i), v) for i, v in enumerate(node))
    else:
        return
    for key, value in items:
        here = f"{path}.{key}" if path else str(key)
        if key == "_target_":
            if not isinstance(value, str) or not _is_allowed_target(value):
                raise ConfigError(
                    f"{here}={value!r} is not allowed: configs may only target torch.optim optimisers, "
                    "torch.nn activations or dropout_risk.*; use optim=adamw or optim=sgd"
                )
        else:
            check_targets(value, here)
