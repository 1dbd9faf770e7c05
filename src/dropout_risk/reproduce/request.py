"""The reproduce app's request: its argv, its checks, its errors."""

from __future__ import annotations

import math
import re
from pathlib import Path

from omegaconf import DictConfig

from dropout_risk.config.argv import quote_values
from dropout_risk.errors import ReproduceError
from dropout_risk.tracking.names import CONFIG_ARTIFACT

_RUN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")


_QUOTED_KEYS = ("run_id", "config", "data_path")  # values Hydra must not parse (ids, paths)


def normalize_argv(args: list[str]) -> list[str]:
    """Quote run ids and paths so Hydra keeps them as strings (an id like `123e4` would be a float)."""
    return quote_values(args, _QUOTED_KEYS)


def check_request(req: DictConfig) -> None:
    """The request's own checks, before anything heavy is imported."""
    if not req.run_id and not req.config:
        raise ReproduceError("nothing to reproduce: pass run_id=<id> (a logged run or sweep) or "
                             "config=path/to/config.yaml")
    if req.run_id and not _RUN_ID.match(str(req.run_id)):
        raise ReproduceError(f"run_id={req.run_id!r} is not an MLflow run id: pass the id a run printed "
                             "(`run_id: <32 hex characters>`)")
    if not (req.tolerance >= 0 and math.isfinite(req.tolerance)):
        raise ReproduceError(f"tolerance={req.tolerance} must be >= 0 (0: exact), e.g. tolerance=1e-6")
    if req.config and not Path(req.config).is_file():
        raise ReproduceError(f"config={req.config}: no such file; pass the path of a saved config.yaml "
                             f"(a run's {CONFIG_ARTIFACT} artifact)")
