"""Compose and check the config once before Hydra does, so a bad override ends in one line."""

from __future__ import annotations

import sys
from collections.abc import Callable

from omegaconf import DictConfig

from dropout_risk.config.explain import explain_error
from dropout_risk.config.paths import CONF_DIR
from dropout_risk.errors import ConfigError


def preflight(config_name: str = "config", argv: list[str] | None = None,
              on_composed: Callable[[DictConfig], None] | None = None) -> None:
    """Compose and check the config once before Hydra does, so that a bad override ends in one
    line (`error: ...`, exit 2) within a second, instead of Hydra's multi-line report or an error
    after torch/Lightning/MLflow have loaded. Flags (--cfg, -m, --config-path ...) are left to Hydra.
    `on_composed(cfg)` runs once the config composed and names the right pipeline, before the
    value checks (which import torch for the `_target_` allow-list): the sweep starts its worker
    processes there, so their imports overlap everything after."""
    from hydra import compose, initialize_config_dir

    from dropout_risk.config.validate import check_pipeline, validate

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a.startswith("-") for a in args):
        return
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            cfg = compose(config_name, overrides=args)
        except Exception as exc:  # noqa: BLE001 - any composition error becomes one line
            print(f"error: {explain_error(exc, args)}", file=sys.stderr)
            sys.exit(2)
    if "seed" in cfg and "optim" in cfg:  # a training config: value checks too
        try:
            check_pipeline(cfg, "sweep" if config_name == "sweep" else "train")
            if on_composed is not None:
                on_composed(cfg)
            validate(cfg)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
