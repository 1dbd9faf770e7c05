"""The tracking contract: run names, artifact paths, tag names; what writes and what reads agree here."""

from __future__ import annotations

import re

from omegaconf import DictConfig


def run_name(cfg: DictConfig) -> str:
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    optim = str(cfg.optim._target_).rsplit(".", 1)[-1].lower()
    hidden = "x".join(str(h) for h in cfg.model.hidden)
    return f"{optim}-lr{cfg.optim.lr:.3g}-h{hidden}-s{cfg.seed}"


CONFIG_ARTIFACT = "config/config.yaml"


_TRIAL_NAME = re.compile(r"^(scan|refine)-\d+-lr")
