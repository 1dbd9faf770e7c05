"""From a frame to features: the label, one-hot encoding of categoricals, numeric checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from dropout_risk.data.base import TabularData
from dropout_risk.data.checks import check_levels, check_not_id, check_standardisable, class_note
from dropout_risk.data.csv_read import close_matches, data_error, show_columns, unknown_names

# a column whose non-empty cells parse as numbers at least this often is numeric (bad cells are errors)
NUMERIC_SHARE = 0.9


# a text column with more levels than this, unique on more than ID_UNIQUE_SHARE of rows, is an ID
MAX_LEVELS = 50


ID_UNIQUE_SHARE = 0.5


def norm_value(value: Any) -> str | None:
    """String form used to compare labels and name one-hot levels: 1, 1.0 and "1" all give "1"."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number) if math.isfinite(number) else text


def _level_order(level: str) -> tuple[int, float, str]:
    try:
        return (0, float(level), level)
    except ValueError:
        return (1, 0.0, level)


# ---------------------------------------------------------------------------------------- encoding
def _labels(frame: pd.DataFrame, target: str, positive: Any, where: str,
            target_key: str) -> tuple[np.ndarray, str | None]:
    """y = (target == positive), and a note when the target has more than two classes."""
    if target not in frame.columns:
        columns = list(frame.columns)
        close = close_matches(target, columns)
        hint = f"did you mean data.target={close[0]!r}? " if close else ""
        raise data_error(
            f"{where}: target column data.target={target!r} not found; {hint}"
            f"available columns: {show_columns(columns)}"
        )
    values = [norm_value(v) for v in frame[target].tolist()]
    empty = [i for i, v in enumerate(values) if v is None or v == ""]
    if empty:
        lines = ", ".join(str(i + 1) for i in empty[:5])
        raise data_error(
            f"{where}: target column {target!r} has {len(empty)} empty cell(s) (data row(s) {lines}); "
            "fill or remove those rows"
        )
    pos = norm_value(positive)
    y = np.fromiter((v == pos for v in values), dtype=np.int64, count=len(values))
    if y.sum() == 0:
        counts = pd.Series(values).value_counts()
        found = ", ".join(f"{v!r} ({n})" for v, n in counts.head(10).items())
        if len(counts) > 10:
            found += f", ... ({len(counts) - 10} more)"
        same_case = [v for v in counts.index if pos is not None and v.lower() == pos.lower()]
        hint = f"did you mean data.positive={same_case[0]!r}? " if same_case else ""
        raise data_error(
            f"{where}: data.positive={positive!r} never occurs in target column {target!r}; {hint}"
            f"values found: {found}; pass one of them as data.positive"
        )
    if y.sum() == len(y):
        raise data_error(
            f"{where}: every row has {target}={pos!r}, so the label is all one class; "
            "the target needs rows that are not data.positive"
        )
    return y, class_note(target_key, values, pos)


def _encode(frame: pd.DataFrame, categorical: Sequence[str], where: str,
            allow_id_like: Sequence[str] = ()) -> pd.DataFrame:
    """Numeric columns -> float64, text/categorical -> one-hot. Raises on bad or missing cells,
    values too large to standardise, numeric IDs (unless in allow_id_like), too many levels."""
    n = len(frame)
    pieces: list[pd.DataFrame] = []
    missing: list[str] = []
    missing_cols: list[str] = []
    onehot: list[str] = []
    raw: list[tuple[str, str, str, tuple[str, ...]]] = []  # (name, kind, dtype, levels): TabularData.raw_columns
    for col in frame.columns:
        series = frame[col]
        as_category = col in categorical
        if not as_category and ptypes.is_bool_dtype(series.dtype):
            pieces.append(series.astype(np.float64).to_frame(col))
            raw.append((str(col), "numeric", "boolean", ()))
            continue
        if not as_category and ptypes.is_numeric_dtype(series.dtype):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        elif not as_category:
            nonnull = series.dropna()
            stripped = nonnull.astype(str).str.strip()
            parsed = pd.to_numeric(stripped, errors="coerce")
            share = parsed.notna().mean() if len(nonnull) else 1.0
            if len(nonnull) and share == 1.0:  # numbers stored as text, e.g. padded with spaces
                cells = [v.strip() if isinstance(v, str) else v for v in series.tolist()]
                values = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(np.float64)
            elif share >= NUMERIC_SHARE:
                bad = stripped[parsed.isna()]
                raise data_error(
                    f"{where}: column {col!r} is numeric except for {len(bad)} cell(s) such as "
                    f"{bad.iloc[0]!r} (data row {int(bad.index[0]) + 1}); fix those cells, or list the column "
                    "in data.drop_columns (or data.categorical if it is really a category)"
                )
            else:
                as_category = True
        if as_category:
            levels = [norm_value(v) for v in series.tolist()]
            n_empty = sum(v is None or v == "" for v in levels)
            if n_empty:
                missing.append(f"{col!r} ({n_empty} empty)")
                missing_cols.append(col)
                continue
            n_levels = len(set(levels))
            if n_levels > MAX_LEVELS and n_levels > ID_UNIQUE_SHARE * n:
                raise data_error(
                    f"{where}: column {col!r} has {n_levels} distinct values in {n} rows, which looks like "
                    f"an ID, not a category; drop it with data.drop_columns=[{col!r}]"
                )
            check_levels(col, n_levels, n, where)
            order = sorted(set(levels), key=_level_order)
            cat = pd.Categorical(levels, categories=order)
            dummies = pd.get_dummies(cat, prefix=col, prefix_sep="=", dtype=np.float64)
            onehot.extend(str(c) for c in dummies.columns)
            pieces.append(dummies)
            dtype = ("long" if ptypes.is_integer_dtype(series.dtype) else "double"
                     if ptypes.is_float_dtype(series.dtype) else "string")
            raw.append((str(col), "categorical", dtype, tuple(order)))
            continue
        n_nan = int(np.isnan(values).sum())
        n_inf = int(np.isinf(values).sum())
        if n_nan or n_inf:
            what = ", ".join(
                s for s in (f"{n_nan} empty" if n_nan else "", f"{n_inf} inf" if n_inf else "") if s
            )
            note = " - a trailing separator?" if str(col).startswith("Unnamed:") and n_nan == n else ""
            missing.append(f"{col!r} ({what}{note})")
            missing_cols.append(col)
            continue
        check_standardisable(col, values, where)
        if col not in allow_id_like:
            check_not_id(col, values, where)
        pieces.append(pd.DataFrame({col: values}))
        raw.append((str(col), "numeric", "double", ()))
    if missing:
        raise data_error(
            f"{where}: feature column(s) with empty/NaN/inf cells: {', '.join(missing)}; no imputation is "
            f"done: drop them with data.drop_columns={missing_cols!r} or clean the file"
        )
    if not pieces:
        raise data_error(f"{where}: no feature columns left; keep at least one column besides data.target")
    features = pd.concat([p.reset_index(drop=True) for p in pieces], axis=1)
    names = [str(c) for c in features.columns]
    clash = sorted({c for c in names if names.count(c) > 1})
    if clash:
        raise data_error(
            f"{where}: one-hot encoding produced duplicate column name(s) {clash!r}; rename the clashing columns"
        )
    features.columns = names
    features.index = pd.RangeIndex(n)
    features = features.astype(np.float64)
    features.attrs["onehot"] = onehot
    features.attrs["raw"] = raw
    return features


def to_tabular(
    frame: pd.DataFrame,
    *,
    target: str,
    positive: Any,
    drop_columns: Sequence[str],
    categorical: Sequence[str],
    name: str,
    where: str,
    fingerprint: dict,
    allow_id_like: Sequence[str] = (),
    target_key: str | None = None,
) -> TabularData:
    """target_key: how the note on a target of more than two classes names it (default: the column)."""
    drop_columns, categorical, allow_id_like = (
        [str(c).strip() for c in ([names] if isinstance(names, str) else names)]
        for names in (drop_columns, categorical, allow_id_like)
    )
    columns = list(frame.columns)
    y, note = _labels(frame, target, positive, where, target_key or f"target column {target!r}")
    for kind, names in (("drop_columns", drop_columns), ("categorical", categorical),
                        ("allow_id_like", allow_id_like)):
        err = unknown_names(kind, names, columns, where)
        if err:
            raise err
    if target in drop_columns:
        raise data_error(f"{where}: data.drop_columns contains the target {target!r}; remove it from the list")
    if target in categorical:
        raise data_error(f"{where}: data.categorical contains the target {target!r}; remove it from the list")
    kept = frame.drop(columns=[target, *drop_columns])
    features = _encode(kept, [c for c in categorical if c not in drop_columns], where, allow_id_like)
    onehot = list(features.attrs.pop("onehot", []))
    raw = list(features.attrs.pop("raw", []))
    return TabularData(name=name, features=features, y=y, p_true=None, fingerprint=fingerprint, onehot=onehot,
                       notes=[note] if note else [], raw_columns=raw, ignored_columns=[target, *drop_columns])
