"""The raw input contract of a trained model: which columns of the training file it takes, how each
becomes features (numeric as is, categorical one-hot with the levels seen at training), and the
run's standardisation. `RawSchema.encode(frame)` turns new students' rows into the float32 matrix
the network saw at training, refusing (one line, DataError) what training would have refused or
cannot score: a missing or unknown column, an unseen category, an empty, non-numeric or
non-finite cell. No torch, no MLflow: the pyfunc model (model/pyfunc.py) and the predict
pipeline (predict/) both use it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from dropout_risk.data.base import TabularData
from dropout_risk.data.csv_read import data_error, show_columns
from dropout_risk.data.encode import norm_value


@dataclass(frozen=True)
class RawColumn:
    name: str
    kind: str  # numeric | categorical
    dtype: str  # the MLflow signature type: double | long | string | boolean
    levels: tuple[str, ...] = ()  # categorical: every level of the training file (normalised text)


@dataclass
class RawSchema:
    columns: list[RawColumn]
    ignored: list[str]  # in the training file, not used: accepted and left alone (target, drop_columns)
    feature_names: list[str]
    mean: list[float]
    std: list[float]
    example: list[dict] = field(default_factory=list)  # typical training students (for the input example)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RawSchema:
        cols = [RawColumn(c["name"], c["kind"], c["dtype"], tuple(c["levels"])) for c in d["columns"]]
        return cls(cols, list(d["ignored"]), list(d["feature_names"]), list(d["mean"]), list(d["std"]),
                   list(d.get("example", [])))

    def check_columns(self, frame: pd.DataFrame, where: str) -> None:
        """Every column the model uses is there; nothing unknown is (ignored columns are allowed)."""
        have = [str(c) for c in frame.columns]
        missing = [n for n in self.names if n not in have]
        if missing:
            raise data_error(f"{where}: missing column(s) {show_columns(missing, 6)} that the model was trained on; "
                             f"add them (the model takes {show_columns(self.names, 6)})")
        extra = [c for c in have if c not in self.names and c not in self.ignored]
        if extra:
            raise data_error(f"{where}: column(s) {show_columns(extra, 6)} were not in the training data; remove "
                             "them (or score with a model trained on them)")

    def encode(self, frame: pd.DataFrame, where: str = "input") -> np.ndarray:
        """The standardised float32 features of `frame`'s rows, exactly as at training."""
        self.check_columns(frame, where)
        index = {name: j for j, name in enumerate(self.feature_names)}
        x = np.zeros((len(frame), len(self.feature_names)), dtype=np.float64)
        for col in self.columns:
            series = frame[col.name].reset_index(drop=True)
            if col.kind == "numeric":
                if col.name in index:
                    x[:, index[col.name]] = _numbers(series, col.name, where)
                continue
            levels = [norm_value(v) for v in series.tolist()]
            known = set(col.levels)
            for row, level in enumerate(levels):
                if level is None or level == "":
                    raise data_error(f"{where}: column {col.name!r} data row {row + 1} is empty; fill it with one of "
                                     f"the training levels {show_columns(list(col.levels), 8)}")
                if level not in known:
                    raise data_error(f"{where}: column {col.name!r} data row {row + 1}: category {level!r} was never "
                                     f"seen in training (levels: {show_columns(list(col.levels), 8)}); map it to one "
                                     "of those or retrain on data that has it")
                j = index.get(f"{col.name}={level}")
                if j is not None:  # a level no training student had was dropped at training: all zeros
                    x[row, j] = 1.0
        with np.errstate(all="ignore"):
            z = ((x - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)
        bad_rows, bad_cols = np.nonzero(~np.isfinite(z))
        if len(bad_rows):
            name = self.feature_names[int(bad_cols[0])]
            raise data_error(f"{where}: column {name!r} data row {int(bad_rows[0]) + 1} is too large to standardise "
                             "with the training statistics; fix or remove the row")
        return z


def _numbers(series: pd.Series, col: str, where: str) -> np.ndarray:
    if ptypes.is_bool_dtype(series.dtype) or ptypes.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        cells = [v.strip() if isinstance(v, str) else v for v in series.tolist()]
        values = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(np.float64)
        bad = [i for i, (v, c) in enumerate(zip(values, cells, strict=True))
               if math.isnan(v) and norm_value(c) not in (None, "")]
        if bad:
            raise data_error(f"{where}: column {col!r} data row {bad[0] + 1}: {cells[bad[0]]!r} is not a number "
                             f"({len(bad)} such cell(s)); the model was trained on numbers in this column: fix the "
                             "cells")
    nonfinite = np.flatnonzero(~np.isfinite(values))
    if len(nonfinite):
        row = int(nonfinite[0])
        what = "empty" if np.isnan(values[row]) else f"{values[row]:g}"
        raise data_error(f"{where}: column {col!r} data row {row + 1} is {what} ({len(nonfinite)} such cell(s)); no "
                         "imputation is done: give every student a finite number")
    return values


def raw_schema(data: TabularData, train_rows: np.ndarray, feature_names: list[str], mean: np.ndarray,
               std: np.ndarray) -> RawSchema:
    """The schema of a model trained on `data` (its training split: `train_rows`), with the split's
    standardisation. The example rows are typical training students (per column: the 25th, 50th and
    75th percentile, the most frequent level), not real ones: no student's record goes into a model."""
    raw = data.raw_columns or [(c, "numeric", "double", ()) for c in data.features.columns]
    columns = [RawColumn(str(n), k, t, tuple(lv)) for n, k, t, lv in raw]
    train = data.features.iloc[train_rows]
    example: list[dict] = [{}, {}, {}]
    for col in columns:
        if col.kind == "numeric":
            qs = train[col.name].quantile([0.25, 0.5, 0.75]).tolist()
            values = [bool(q >= 0.5) for q in qs] if col.dtype == "boolean" else [float(q) for q in qs]
        else:
            counts = {lv: float(train[f"{col.name}={lv}"].sum()) for lv in col.levels if f"{col.name}={lv}" in train}
            top = max(counts, key=lambda lv: counts[lv]) if counts else col.levels[0]
            value = int(top) if col.dtype == "long" else float(top) if col.dtype == "double" else top
            values = [value] * 3
        for row, v in zip(example, values, strict=True):
            row[col.name] = v
    return RawSchema(columns, [str(c) for c in data.ignored_columns], list(feature_names),
                     [float(v) for v in mean], [float(v) for v in std], example)
