"""CSV loading and validation: any CSV with a binary target, and the UCI dropout file.

Every problem with the input raises :class:`DataError` with one line saying what is wrong and
which setting fixes it (``data.path``, ``data.sep``, ``data.target``, ``data.positive``,
``data.drop_columns``, ``data.categorical``). Nothing is imputed or silently dropped: a cell that
cannot become a finite float is an error naming its column.

Feature encoding: numeric columns become float64; text columns and the columns listed in
``categorical`` are one-hot encoded as ``"column=value"`` float columns (every level kept, levels
in numeric order when they are numbers). Integer codes are written without a trailing ``.0``.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from dropout_risk.data.base import DataError, TabularData

SEPARATORS = ",;\t|"
SNIFF_BYTES = 16384
# a column whose non-empty cells parse as numbers at least this often is numeric (bad cells are errors)
NUMERIC_SHARE = 0.9
# a text column with more levels than this, unique on more than ID_UNIQUE_SHARE of rows, is an ID
MAX_LEVELS = 50
ID_UNIQUE_SHARE = 0.5

# --- the UCI "Predict Students' Dropout and Academic Success" file (see shared/data/uci_dropout/SOURCE.md)
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


# ----------------------------------------------------------------------------------------- helpers
def _fail(message: str) -> DataError:
    """A DataError whose message is guaranteed to be a single line."""
    return DataError(" ".join(message.split("\n")).replace("\r", " "))


def _sep_name(sep: str) -> str:
    return {"\t": "\\t"}.get(sep, sep)


def _show_columns(columns: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    if len(columns) > limit:
        shown += f", ... ({len(columns) - limit} more)"
    return shown


def _norm_value(value: Any) -> str | None:
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


def _count_outside_quotes(line: str, sep: str) -> int:
    count, quoted = 0, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            count += 1
    return count


def _guess_sep(header: str, exclude: str = "") -> str | None:
    """The candidate separator occurring most often in the header line (outside quotes), if any."""
    counts = {s: _count_outside_quotes(header, s) for s in SEPARATORS if s != exclude}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] > 0 else None


def _sniff_sep(head: str) -> str:
    lines = [line for line in head.splitlines() if line.strip()]
    if not lines:
        return ","
    try:
        sep = csv.Sniffer().sniff("\n".join(lines[:50]), delimiters=SEPARATORS).delimiter
    except csv.Error:
        sep = None
    # the sniffer can be fooled (e.g. by a separator inside a quoted header): the header must split on it
    if sep is None or _count_outside_quotes(lines[0], sep) == 0:
        sep = _guess_sep(lines[0]) or ","
    return sep


def _close_matches(name: str, choices: Sequence[str]) -> list[str]:
    by_lower = {c.lower(): c for c in choices}
    matches = [by_lower[name.lower()]] if name.lower() in by_lower else []
    for m in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6):
        if by_lower[m] not in matches:
            matches.append(by_lower[m])
    return matches


def _unknown_names(kind: str, names: Iterable[str], columns: Sequence[str], where: str) -> DataError | None:
    unknown = [n for n in names if n not in columns]
    if not unknown:
        return None
    hints = []
    for n in unknown:
        close = _close_matches(n, columns)
        if close:
            hints.append(f"{n!r} -> {close[0]!r}?")
    hint = f" (did you mean {', '.join(hints)})" if hints else ""
    return _fail(
        f"{where}: data.{kind} names column(s) not in the file: {', '.join(repr(n) for n in unknown)}{hint}; "
        f"available columns: {_show_columns(list(columns))}"
    )


# ----------------------------------------------------------------------------------------- reading
def _read_frame(path: str | os.PathLike[str], sep: str | None) -> tuple[pd.DataFrame, Path, str, str]:
    """Read a CSV into a DataFrame with stripped column names. Returns (frame, path, sha256, sep)."""
    p = Path(path).expanduser()
    if not p.exists():
        looked = "" if p.is_absolute() else f" (looked for {p.absolute()})"
        raise _fail(f"data.path={str(p)!r}: no such file{looked}; pass data.path=/path/to/file.csv")
    if p.is_dir():
        raise _fail(f"data.path={str(p)!r} is a directory, not a file; pass data.path=/path/to/file.csv")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise _fail(f"data.path={str(p)!r} cannot be read ({exc.strerror}); check its permissions") from exc
    if not raw.strip():
        raise _fail(f"data.path={str(p)!r} is empty (0 rows); pass a CSV with a header line and data rows")
    sha256 = hashlib.sha256(raw).hexdigest()

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(
            f"data.path={str(p)!r} is not UTF-8 text (byte {exc.start} cannot be decoded); "
            "re-save the file as UTF-8 CSV"
        ) from exc
    head = text[:SNIFF_BYTES]
    if len(text) > SNIFF_BYTES and "\n" in head:
        head = head[: head.rfind("\n")]  # drop the line cut in half
    header = next((line for line in head.splitlines() if line.strip()), "")
    if isinstance(sep, str) and sep.lower() in ("\\t", "tab"):  # as typed on a command line
        sep = "\t"
    if sep is None:
        sep = _sniff_sep(head)
    elif not isinstance(sep, str) or len(sep) != 1:
        raise _fail(f"data.sep={sep!r} must be a single character such as ',', ';', '\\t' or '|'")

    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep)
    except pd.errors.EmptyDataError as exc:
        raise _fail(
            f"data.path={str(p)!r} has no header line; pass a CSV with a header and data rows"
        ) from exc
    except (pd.errors.ParserError, csv.Error) as exc:
        guess = _guess_sep(header, exclude=sep)
        hint = (
            f"; the file looks {guess!r}-separated: pass data.sep='{_sep_name(guess)}'"
            if guess and _count_outside_quotes(header, guess) > _count_outside_quotes(header, sep)
            else "; check the quoting and that every row has as many fields as the header"
        )
        detail = str(exc).strip().split("\n")[-1]
        raise _fail(f"data.path={str(p)!r} could not be parsed with sep={sep!r} ({detail}){hint}") from exc

    names = [str(c).replace("\ufeff", "").strip() for c in frame.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _fail(
            f"data.path={str(p)!r}: duplicate column name(s) {', '.join(repr(d) for d in dupes)} "
            "(after stripping spaces); rename them in the header"
        )
    frame.columns = names

    if frame.shape[1] == 1:
        guess = _guess_sep(header, exclude=sep)
        if guess:
            raise _fail(
                f"data.path={str(p)!r} read with sep={sep!r} found 1 column; "
                f"the file looks {guess!r}-separated: pass data.sep='{_sep_name(guess)}'"
            )
        raise _fail(
            f"data.path={str(p)!r} has a single column {names[0]!r}; a CSV needs a target and at least "
            "one feature column (pass data.sep=... if it uses another separator)"
        )
    if len(frame) == 0:
        raise _fail(
            f"data.path={str(p)!r} has a header but no data rows; pass a CSV with at least one data row"
        )
    return frame, p, sha256, sep


# ---------------------------------------------------------------------------------------- encoding
def _labels(frame: pd.DataFrame, target: str, positive: Any, where: str) -> np.ndarray:
    if target not in frame.columns:
        columns = list(frame.columns)
        close = _close_matches(target, columns)
        hint = f"did you mean data.target={close[0]!r}? " if close else ""
        raise _fail(
            f"{where}: target column data.target={target!r} not found; {hint}"
            f"available columns: {_show_columns(columns)}"
        )
    values = [_norm_value(v) for v in frame[target].tolist()]
    empty = [i for i, v in enumerate(values) if v is None or v == ""]
    if empty:
        lines = ", ".join(str(i + 1) for i in empty[:5])
        raise _fail(
            f"{where}: target column {target!r} has {len(empty)} empty cell(s) (data row(s) {lines}); "
            "fill or remove those rows"
        )
    pos = _norm_value(positive)
    y = np.fromiter((v == pos for v in values), dtype=np.int64, count=len(values))
    if y.sum() == 0:
        counts = pd.Series(values).value_counts()
        found = ", ".join(f"{v!r} ({n})" for v, n in counts.head(10).items())
        if len(counts) > 10:
            found += f", ... ({len(counts) - 10} more)"
        same_case = [v for v in counts.index if pos is not None and v.lower() == pos.lower()]
        hint = f"did you mean data.positive={same_case[0]!r}? " if same_case else ""
        raise _fail(
            f"{where}: data.positive={positive!r} never occurs in target column {target!r}; {hint}"
            f"values found: {found}; pass one of them as data.positive"
        )
    if y.sum() == len(y):
        raise _fail(
            f"{where}: every row has {target}={pos!r}, so the label is all one class; "
            "the target needs rows that are not data.positive"
        )
    return y


def _encode(frame: pd.DataFrame, categorical: Sequence[str], where: str) -> pd.DataFrame:
    """Numeric columns -> float64, text/categorical -> one-hot. Raises on bad or missing cells."""
    n = len(frame)
    pieces: list[pd.DataFrame] = []
    missing: list[str] = []
    missing_cols: list[str] = []
    onehot: list[str] = []
    for col in frame.columns:
        series = frame[col]
        as_category = col in categorical
        if not as_category and ptypes.is_bool_dtype(series.dtype):
            pieces.append(series.astype(np.float64).to_frame(col))
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
                raise _fail(
                    f"{where}: column {col!r} is numeric except for {len(bad)} cell(s) such as "
                    f"{bad.iloc[0]!r} (data row {int(bad.index[0]) + 1}); fix those cells, or list the column "
                    "in data.drop_columns (or data.categorical if it is really a category)"
                )
            else:
                as_category = True
        if as_category:
            levels = [_norm_value(v) for v in series.tolist()]
            n_empty = sum(v is None or v == "" for v in levels)
            if n_empty:
                missing.append(f"{col!r} ({n_empty} empty)")
                missing_cols.append(col)
                continue
            n_levels = len(set(levels))
            if n_levels > MAX_LEVELS and n_levels > ID_UNIQUE_SHARE * n:
                raise _fail(
                    f"{where}: column {col!r} has {n_levels} distinct values in {n} rows, which looks like "
                    f"an ID, not a category; drop it with data.drop_columns=[{col!r}]"
                )
            order = sorted(set(levels), key=_level_order)
            cat = pd.Categorical(levels, categories=order)
            dummies = pd.get_dummies(cat, prefix=col, prefix_sep="=", dtype=np.float64)
            onehot.extend(str(c) for c in dummies.columns)
            pieces.append(dummies)
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
        pieces.append(pd.DataFrame({col: values}))
    if missing:
        raise _fail(
            f"{where}: feature column(s) with empty/NaN/inf cells: {', '.join(missing)}; no imputation is "
            f"done: drop them with data.drop_columns={missing_cols!r} or clean the file"
        )
    if not pieces:
        raise _fail(f"{where}: no feature columns left; keep at least one column besides data.target")
    features = pd.concat([p.reset_index(drop=True) for p in pieces], axis=1)
    names = [str(c) for c in features.columns]
    clash = sorted({c for c in names if names.count(c) > 1})
    if clash:
        raise _fail(
            f"{where}: one-hot encoding produced duplicate column name(s) {clash!r}; rename the clashing columns"
        )
    features.columns = names
    features.index = pd.RangeIndex(n)
    features = features.astype(np.float64)
    features.attrs["onehot"] = onehot
    return features


def _to_tabular(
    frame: pd.DataFrame,
    *,
    target: str,
    positive: Any,
    drop_columns: Sequence[str],
    categorical: Sequence[str],
    name: str,
    where: str,
    fingerprint: dict,
) -> TabularData:
    if isinstance(drop_columns, str):
        drop_columns = [drop_columns]
    if isinstance(categorical, str):
        categorical = [categorical]
    drop_columns = [str(c).strip() for c in drop_columns]
    categorical = [str(c).strip() for c in categorical]
    columns = list(frame.columns)
    y = _labels(frame, target, positive, where)
    for kind, names in (("drop_columns", drop_columns), ("categorical", categorical)):
        err = _unknown_names(kind, names, columns, where)
        if err:
            raise err
    if target in drop_columns:
        raise _fail(f"{where}: data.drop_columns contains the target {target!r}; remove it from the list")
    if target in categorical:
        raise _fail(f"{where}: data.categorical contains the target {target!r}; remove it from the list")
    kept = frame.drop(columns=[target, *drop_columns])
    features = _encode(kept, [c for c in categorical if c not in drop_columns], where)
    onehot = list(features.attrs.pop("onehot", []))
    return TabularData(name=name, features=features, y=y, p_true=None, fingerprint=fingerprint, onehot=onehot)


# --------------------------------------------------------------------------------------- public API
def load_csv(
    path: str | os.PathLike[str],
    target: str,
    positive: Any,
    sep: str | None = None,
    drop_columns: Sequence[str] = (),
    categorical: Sequence[str] = (),
    name: str = "csv",
) -> TabularData:
    """Load any CSV with a binary label ``y = (target == positive)``.

    sep:          the separator; ``None`` sniffs it from the first 16 KB (one of ``, ; \\t |``).
    positive:     the target value meaning "dropout", compared as normalised text (``1`` matches "1").
    drop_columns: removed before anything else is checked (IDs, leaking or broken columns).
    categorical:  one-hot encoded even if numeric (integer-coded categories); text columns always are.
    Fingerprint:  ``{"sha256": <file bytes>, "path": ..., "rows": <rows>}``.
    """
    frame, p, sha256, _ = _read_frame(path, sep)
    where = f"data.path={str(p)!r}"
    fingerprint = {"sha256": sha256, "path": str(p), "rows": len(frame)}
    return _to_tabular(
        frame,
        target=str(target).strip(),
        positive=positive,
        drop_columns=drop_columns,
        categorical=categorical,
        name=name,
        where=where,
        fingerprint=fingerprint,
    )


def load_uci_dropout(
    path: str | os.PathLike[str],
    drop_enrolled: bool = False,
    early_warning: bool = False,
    sep: str = UCI_SEP,
    drop_columns: Sequence[str] = (),
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
    frame, p, sha256, _ = _read_frame(path, sep)
    where = f"data.path={str(p)!r}"
    columns = list(frame.columns)
    missing = [c for c in (UCI_TARGET, *UCI_CATEGORICAL, *UCI_SECOND_SEM_COLUMNS) if c not in columns]
    if missing:
        raise _fail(
            f"{where} is not the UCI dropout file (no column(s) {_show_columns(missing, 4)}; "
            f"found {_show_columns(columns, 6)}); point data.path at the UCI 'Predict Students' Dropout and "
            "Academic Success' data.csv, or load other files with the generic csv loader"
        )
    rows_in_file = len(frame)
    if drop_enrolled:
        keep = [(_norm_value(v) != UCI_ENROLLED) for v in frame[UCI_TARGET].tolist()]
        frame = frame.loc[keep].reset_index(drop=True)
        if len(frame) == 0:
            raise _fail(
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
    return _to_tabular(
        frame,
        target=UCI_TARGET,
        positive=UCI_POSITIVE,
        drop_columns=[*leaking, *(c for c in user_drop if str(c).strip() not in leaking)],
        categorical=UCI_CATEGORICAL,
        name="uci_dropout",
        where=where,
        fingerprint=fingerprint,
    )
