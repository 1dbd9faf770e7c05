"""`load_data(cfg.data, seed)`: the config's data source, as TabularData.

Results are cached per process (a sweep trains many models on the same data); a CSV's cache
key includes its size and modification time, so an edited file is read again.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig

from dropout_risk.data.base import DataError, TabularData
from dropout_risk.data.cohort import generate_cohort
from dropout_risk.data.tabular import load_csv, load_uci_dropout

_CACHE: dict[tuple, TabularData] = {}
_CACHE_MAX = 4


def _file_key(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return (path, None)
    return (path, st.st_size, st.st_mtime_ns)


def load_data(cfg: DictConfig, seed: int) -> TabularData:
    allow_id_like = tuple(cfg.get("allow_id_like") or ())
    if cfg.kind == "cohort":
        key: tuple = ("cohort", cfg.n_students, seed)
        make = lambda: generate_cohort(cfg.n_students, seed)  # noqa: E731
    elif cfg.kind == "uci_dropout":
        key = ("uci", _file_key(cfg.path), cfg.drop_enrolled, cfg.early_warning, tuple(cfg.drop_columns),
               allow_id_like)
        make = lambda: load_uci_dropout(  # noqa: E731
            cfg.path,
            drop_enrolled=cfg.drop_enrolled,
            early_warning=cfg.early_warning,
            drop_columns=tuple(cfg.drop_columns),
            allow_id_like=allow_id_like,
        )
    elif cfg.kind == "csv":
        key = (
            "csv",
            _file_key(cfg.path),
            cfg.target,
            str(cfg.positive),
            cfg.sep,
            tuple(cfg.drop_columns),
            tuple(cfg.categorical),
            allow_id_like,
        )
        make = lambda: load_csv(  # noqa: E731
            cfg.path,
            target=cfg.target,
            positive=str(cfg.positive),
            sep=cfg.sep,
            drop_columns=tuple(cfg.drop_columns),
            categorical=tuple(cfg.categorical),
            allow_id_like=allow_id_like,
        )
    else:
        raise DataError(f"data.kind={cfg.kind!r} is unknown: use data=cohort, data=csv or data=uci_dropout")
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = make()
    return _CACHE[key]
