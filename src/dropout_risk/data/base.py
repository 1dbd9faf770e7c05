"""The container every data source returns, and the error every data problem raises."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class DataError(ValueError):
    """Bad input data. The message is one line: what is wrong and how to fix it."""


@dataclass
class TabularData:
    """Numeric features, binary labels and (for synthetic data) the true probability.

    features: float columns only (categoricals already one-hot encoded), no NaN/inf.
    y:        int64 array of 0/1, same length as features.
    p_true:   the known P(y=1 | x) when the data is synthetic, else None.
    fingerprint: what identifies the data (sha256 of file bytes, or generator version + params).
    onehot:   names of the one-hot indicator columns (a rare level may be absent from a split).
    notes:    one-line remarks for the user (e.g. how a target of several classes was grouped),
              printed to stderr once the data passed every check (`StudentDataModule`).
    raw_columns: the file's feature columns as read, (name, kind, dtype, levels) each: kind numeric |
              categorical, dtype double | long | string | boolean, levels (categorical) in feature order;
              empty: every feature is a numeric raw column (the cohort). data/schema.py scores new rows with it.
    ignored_columns: columns of the file the model does not use (the target, data.drop_columns).
    """

    name: str
    features: pd.DataFrame
    y: np.ndarray
    p_true: np.ndarray | None = None
    fingerprint: dict = field(default_factory=dict)
    onehot: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw_columns: list[tuple[str, str, str, tuple[str, ...]]] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    notes_shown: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.features) != len(self.y):
            raise DataError(f"{self.name}: {len(self.features)} feature rows but {len(self.y)} labels")
