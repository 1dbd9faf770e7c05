"""CSV loading and validation: any CSV with a binary target, and the UCI dropout file
(reading in data/csv_read.py, encoding in data/encode.py).

Every problem with the input raises :class:`DataError` with one line saying what is wrong and
which setting fixes it (``data.path``, ``data.sep``, ``data.target``, ``data.positive``,
``data.drop_columns``, ``data.categorical``, ``data.allow_id_like``). Nothing is imputed or silently
dropped: a cell that cannot become a finite float is an error naming its column. Also refused (checks in
data/csv_read.py and data/checks.py): a header naming a column twice, a row with another number of
fields than the header, a value too large to standardise, a numeric column of distinct integers
increasing with the row order (an ID; ``allow_id_like`` keeps it), a categorical column of more than
1000 levels. A target of more than two classes is grouped as ``positive`` vs the rest, with a note.

Feature encoding: numeric columns become float64; text columns and the columns listed in
``categorical`` are one-hot encoded as ``"column=value"`` float columns (every level kept, levels
in numeric order when they are numbers). Integer codes are written without a trailing ``.0``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from dropout_risk.data.base import TabularData
from dropout_risk.data.csv_read import data_error, read_frame, show_columns
from dropout_risk.data.encode import norm_value, to_tabular

# --- the UCI "Predict Students' Dropout and Academic Success" file (`;`-separated, a BOM, a tab inside one column name, integer-coded categoricals)
UCI_TARGET = "Target"


UCI_POSITIVE = "Dropout"


UCI_ENROLLED = "Enrolled"


UCI_SEP = ";"


# integer-coded nominal columns: one-hot encoded, never read as ordinal numbers.
# (Application order is ordinal and the 0/1 columns are already numeric: both stay as they are.)
UCI_CATEGORICAL: tuple[str, ...] = (
    "Marital status",
    "Application mode",
    "Course",
    "Previous qualification",
    "Nacionality",  # sic: the source's spelling
    "Mother's qualification",
    "Father's qualification",
    "Mother's occupation",
    "Father's occupation",
)


_UCI_UNIT_STATS = ("credited", "enrolled", "evaluations", "approved", "grade", "without evaluations")


# what happened in the 1st / 2nd semester after enrolment (the 2nd leaks the outcome of a term-1 warning)
UCI_FIRST_SEM_COLUMNS: tuple[str, ...] = tuple(f"Curricular units 1st sem ({s})" for s in _UCI_UNIT_STATS)


UCI_SECOND_SEM_COLUMNS: tuple[str, ...] = tuple(f"Curricular units 2nd sem ({s})" for s in _UCI_UNIT_STATS)


# --------------------------------------------------------------------------------------- public API
def load_csv(
    path: str | os.PathLike[str],
    target: str,
    positive: Any,
    sep: str | None = None,
    drop_columns: Sequence[str] = (),
    categorical: Sequence[str] = (),
    name: str = "csv",
    allow_id_like: Sequence[str] = (),
) -> TabularData:
    """Load any CSV with a binary label ``y = (target == positive)``.

    sep:          the separator; ``None`` sniffs it from the first 16 KB (one of ``, ; \\t |``).
    positive:     the target value meaning "dropout", compared as normalised text (``1`` matches "1").
    drop_columns: removed before anything else is checked (IDs, leaking or broken columns).
    categorical:  one-hot encoded even if numeric (integer-coded categories); text columns always are.
    allow_id_like: numeric columns kept although they look like an ID (distinct integers increasing
                  with the row order, e.g. 1..n), which are refused otherwise.
    Fingerprint:  ``{"sha256": <file bytes>, "path": ..., "rows": <rows>}``.
    """
    frame, p, sha256, _ = read_frame(path, sep)
    where = f"data.path={str(p)!r}"
    fingerprint = {"sha256": sha256, "path": str(p), "rows": len(frame)}
    return to_tabular(
        frame,
        target=str(target).strip(),
        positive=positive,
        drop_columns=drop_columns,
        categorical=categorical,
        name=name,
        where=where,
        fingerprint=fingerprint,
        allow_id_like=allow_id_like,
        target_key=f"data.target={str(target).strip()!r}",
    )


def load_uci_dropout(
    path: str | os.PathLike[str],
    drop_enrolled: bool = False,
    early_warning: bool = False,
    sep: str = UCI_SEP,
    drop_columns: Sequence[str] = (),
    allow_id_like: Sequence[str] = (),
) -> TabularData:
    """The UCI "Predict Students' Dropout and Academic Success" file as Dropout (1) vs the rest (0).

    drop_enrolled: remove the still-"Enrolled" students (outcome unknown) before labelling, so the
                   task becomes Dropout vs Graduate.
    early_warning: drop the "Curricular units 2nd sem (...)" columns, which record what happened
                   after the point of prediction and leak the outcome. The 1st-semester columns are
                   kept (a warning issued after the first semester); for an at-enrolment model also
                   pass ``drop_columns=UCI_FIRST_SEM_COLUMNS``. (Unemployment rate, Inflation rate
                   and GDP encode the entry year rather than leak; they are kept.)
    The integer-coded nominal columns in ``UCI_CATEGORICAL`` are one-hot encoded.
    """
    frame, p, sha256, _ = read_frame(path, sep)
    where = f"data.path={str(p)!r}"
    columns = list(frame.columns)
    missing = [c for c in (UCI_TARGET, *UCI_CATEGORICAL, *UCI_SECOND_SEM_COLUMNS) if c not in columns]
    if missing:
        raise data_error(
            f"{where} is not the UCI dropout file (no column(s) {show_columns(missing, 4)}; "
            f"found {show_columns(columns, 6)}); point data.path at the UCI 'Predict Students' Dropout and "
            "Academic Success' data.csv, or load other files with the generic csv loader"
        )
    rows_in_file = len(frame)
    if drop_enrolled:
        keep = [(norm_value(v) != UCI_ENROLLED) for v in frame[UCI_TARGET].tolist()]
        frame = frame.loc[keep].reset_index(drop=True)
        if len(frame) == 0:
            raise data_error(
                f"{where}: every row is {UCI_ENROLLED!r}; nothing is left with data.drop_enrolled=true"
            )
    leaking = [c for c in UCI_SECOND_SEM_COLUMNS if c in columns] if early_warning else []
    fingerprint = {
        "sha256": sha256,
        "path": str(p),
        "rows": len(frame),
        "rows_in_file": rows_in_file,
        "drop_enrolled": bool(drop_enrolled),
        "early_warning": bool(early_warning),
    }
    user_drop = [drop_columns] if isinstance(drop_columns, str) else list(drop_columns)
    return to_tabular(
        frame,
        target=UCI_TARGET,
        positive=UCI_POSITIVE,
        drop_columns=[*leaking, *(c for c in user_drop if str(c).strip() not in leaking)],
        categorical=UCI_CATEGORICAL,
        name="uci_dropout",
        where=where,
        fingerprint=fingerprint,
        allow_id_like=allow_id_like,
    )
