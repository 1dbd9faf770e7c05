"""The predict app's request: its argv, its checks, its error. No heavy imports."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig

from dropout_risk.config.argv import quote_values
from dropout_risk.errors import ConfigError

_RUN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")
_QUOTED_KEYS = ("run_id", "model_uri", "data.path", "out")  # values Hydra must not parse (ids, paths)


class PredictError(ConfigError):
    """Nothing can be scored as asked. One line: what is wrong and how to fix it."""


def normalize_argv(args: list[str]) -> list[str]:
    """Quote run ids and paths so Hydra keeps them as strings (an id like `123e4` would be a float)."""
    return quote_values(args, _QUOTED_KEYS)


def check_request(req: DictConfig) -> None:
    """The request's own checks, before anything heavy is imported."""
    if bool(req.run_id) == bool(req.model_uri):
        raise PredictError("name one model: pass run_id=<id> (a training run) or model_uri=<uri> "
                           "(runs:/<id>/pyfunc_model, models:/<name>/<version>), not both")
    if req.run_id and not _RUN_ID.match(str(req.run_id)):
        raise PredictError(f"run_id={req.run_id!r} is not an MLflow run id: pass the id a run printed "
                           "(`run_id: <32 hex characters>`)")
    if not req.data.path:
        raise PredictError("no students to score: pass data.path=new.csv (the training file's columns, "
                           "the target may be left out)")
    if not req.out:
        raise PredictError("no output file: pass out=scores.csv")
    out = Path(str(req.out)).expanduser()
    if out.is_dir():
        raise PredictError(f"out={req.out} is a directory: pass a file name, e.g. out={out / 'scores.csv'}")
    if not out.absolute().parent.is_dir():
        raise PredictError(f"out={req.out}: its folder {out.absolute().parent} does not exist; create it or pass "
                           "another path")
    if out.absolute() == Path(str(req.data.path)).expanduser().absolute():
        raise PredictError(f"out={req.out} is the input file: pass another path, e.g. out=scores.csv")
