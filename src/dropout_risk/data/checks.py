"""Checks on encoded columns that a file can fail although every cell parses: values too large to
standardise, integer IDs posing as features, too many categorical levels; and the note that says
how a target with more than two classes was grouped.

Rows are named as "data row N": the N-th row after the header, counting from 1.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from dropout_risk.data.csv_read import data_error

# A numeric column strictly increasing over at least this many rows looks like an ID. (Fewer rows
# cannot be trained on anyway: the split needs 10 students of each class.)
MIN_ID_ROWS = 20


# one-hot encoding makes a feature per level: a column with more levels is refused
MAX_ONEHOT_LEVELS = 1000


def magnitude_limit(n_rows: int) -> float:
    """The largest |value| whose standardisation cannot overflow float64 in any split of
    `n_rows` rows: deviations from a split's mean are at most 2|value|, and the sum of
    n_rows squared deviations must stay below float64's maximum."""
    return math.sqrt(float(np.finfo(np.float64).max) / max(n_rows, 1)) / 2


def check_standardisable(col: str, values: np.ndarray, where: str) -> None:
    """Refuse a finite value so large that its column's mean or standard deviation overflows."""
    limit = magnitude_limit(len(values))
    too_large = np.flatnonzero(np.abs(values) > limit)
    if len(too_large) == 0:
        return
    row = int(too_large[np.argmax(np.abs(values[too_large]))])
    more = f" (and {len(too_large) - 1} more row(s))" if len(too_large) > 1 else ""
    raise data_error(
        f"{where}: column {col!r} data row {row + 1}: value {values[row]:g} is too large to standardise "
        f"(mean/std overflow float64: with {len(values)} rows |values| must stay below {limit:.3g}){more}; "
        f"fix or drop the row, or drop the column with data.drop_columns=[{col!r}]"
    )


def check_not_id(col: str, values: np.ndarray, where: str) -> None:
    """Refuse an integer column whose values are all distinct and increase with the row order
    (1..n, 1001.., ...): a row number or student ID, not a property of the student."""
    n = len(values)
    if n < MIN_ID_ROWS or not np.all(values == np.round(values)) or not np.all(np.diff(values) > 0):
        return
    raise data_error(
        f"{where}: column {col!r} looks like an ID, not a feature (its {n} values are distinct integers "
        f"increasing with the row order: {values[0]:g}, {values[1]:g}, ..., {values[-1]:g}); drop it with "
        f"data.drop_columns=[{col!r}], or keep it with data.allow_id_like=[{col!r}]"
    )


def check_levels(col: str, n_levels: int, n_rows: int, where: str) -> None:
    if n_levels > MAX_ONEHOT_LEVELS:
        raise data_error(
            f"{where}: column {col!r} has {n_levels} distinct values in {n_rows} rows: one-hot encoding would "
            f"make {n_levels} feature columns (at most {MAX_ONEHOT_LEVELS} per column); drop it with "
            f"data.drop_columns=[{col!r}] or group its values into fewer categories in the file"
        )


def class_note(target_key: str, values: Sequence[str], positive: str) -> str | None:
    """For a target with more than two classes: one line saying how they were grouped."""
    counts = Counter(values)
    if len(counts) <= 2:
        return None
    others = [(v, n) for v, n in counts.most_common() if v != positive]
    n_neg = sum(n for _, n in others)
    listed = ", ".join(f"{v!r} {n}" for v, n in others[:4]) + (", ..." if len(others) > 4 else "")
    return (
        f"note: {target_key} has {len(counts)} classes; positive = {positive!r} ({counts[positive]} students), "
        f"negative = the other {len(others)} classes ({n_neg} students: {listed})"
    )
