"""Reading a CSV as a user hands it over: separator, encoding, header checks; one-line errors."""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from dropout_risk.data.base import DataError

SEPARATORS = ",;\t|"


SNIFF_BYTES = 16384


# ----------------------------------------------------------------------------------------- helpers
def data_error(message: str) -> DataError:
    """A DataError whose message is guaranteed to be a single line."""
    return DataError(" ".join(message.split("\n")).replace("\r", " "))


def _sep_name(sep: str) -> str:
    return {"\t": "\\t"}.get(sep, sep)


def show_columns(columns: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    if len(columns) > limit:
        shown += f", ... ({len(columns) - limit} more)"
    return shown


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


def close_matches(name: str, choices: Sequence[str]) -> list[str]:
    by_lower = {c.lower(): c for c in choices}
    matches = [by_lower[name.lower()]] if name.lower() in by_lower else []
    for m in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6):
        if by_lower[m] not in matches:
            matches.append(by_lower[m])
    return matches


def unknown_names(kind: str, names: Iterable[str], columns: Sequence[str], where: str) -> DataError | None:
    unknown = [n for n in names if n not in columns]
    if not unknown:
        return None
    hints = []
    for n in unknown:
        close = close_matches(n, columns)
        if close:
            hints.append(f"{n!r} -> {close[0]!r}?")
    hint = f" (did you mean {', '.join(hints)})" if hints else ""
    return data_error(
        f"{where}: data.{kind} names column(s) not in the file: {', '.join(repr(n) for n in unknown)}{hint}; "
        f"available columns: {show_columns(list(columns))}"
    )


def raw_header(text: str, sep: str) -> list[str]:
    """The header's names as written (stripped of spaces and a BOM): pandas renames a repeated
    name (`grade`, `grade.1`), so duplicates are looked for here. [] if it cannot be split."""
    try:
        row = next((r for r in csv.reader(io.StringIO(text), delimiter=sep) if any(c.strip() for c in r)), [])
    except csv.Error:
        return []
    return [c.replace("\ufeff", "").strip() for c in row]


def check_field_counts(text: str, sep: str, where: str) -> None:
    """Every non-blank row has as many fields as the header. pandas fills a short row with empty
    cells, and reads a header one field short as an index column: both are refused here."""
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    try:
        rows = ((reader.line_num, r) for r in reader if any(c.strip() for c in r))
        _, header = next(rows, (0, []))
        for data_row, (line, row) in enumerate(rows, start=1):
            if len(row) != len(header):
                raise data_error(
                    f"{where}: data row {data_row} (file line {line}) has {len(row)} field(s) but the header has "
                    f"{len(header)} (sep={sep!r}); check the separator and the quoting, and give every row as many "
                    "fields as the header"
                )
    except csv.Error:
        return  # pandas read it: its quoting rules are the ones that count


def _duplicates(names: Sequence[str]) -> list[str]:
    return sorted({n for n in names if n and names.count(n) > 1})


# ----------------------------------------------------------------------------------------- reading
def read_frame(path: str | os.PathLike[str], sep: str | None) -> tuple[pd.DataFrame, Path, str, str]:
    """Read a CSV into a DataFrame with stripped column names. Returns (frame, path, sha256, sep)."""
    p = Path(path).expanduser()
    if not p.exists():
        looked = "" if p.is_absolute() else f" (looked for {p.absolute()})"
        raise data_error(f"data.path={str(p)!r}: no such file{looked}; pass data.path=/path/to/file.csv")
    if p.is_dir():
        raise data_error(f"data.path={str(p)!r} is a directory, not a file; pass data.path=/path/to/file.csv")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise data_error(f"data.path={str(p)!r} cannot be read ({exc.strerror}); check its permissions") from exc
    if not raw.strip():
        raise data_error(f"data.path={str(p)!r} is empty (0 rows); pass a CSV with a header line and data rows")
    sha256 = hashlib.sha256(raw).hexdigest()

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise data_error(
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
        raise data_error(f"data.sep={sep!r} must be a single character such as ',', ';', '\\t' or '|'")

    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep)
    except pd.errors.EmptyDataError as exc:
        raise data_error(
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
        raise data_error(f"data.path={str(p)!r} could not be parsed with sep={sep!r} ({detail}){hint}") from exc

    names = [str(c).replace("\ufeff", "").strip() for c in frame.columns]
    dupes = _duplicates(raw_header(text, sep)) or _duplicates(names)
    if dupes:
        raise data_error(
            f"data.path={str(p)!r}: duplicate column name(s) {', '.join(repr(d) for d in dupes)} in the header "
            "(after stripping spaces); rename them so that every column has its own name"
        )
    frame.columns = names

    if frame.shape[1] == 1:
        guess = _guess_sep(header, exclude=sep)
        if guess:
            raise data_error(
                f"data.path={str(p)!r} read with sep={sep!r} found 1 column; "
                f"the file looks {guess!r}-separated: pass data.sep='{_sep_name(guess)}'"
            )
        raise data_error(
            f"data.path={str(p)!r} has a single column {names[0]!r}; a CSV needs a target and at least "
            "one feature column (pass data.sep=... if it uses another separator)"
        )
    if len(frame) == 0:
        raise data_error(
            f"data.path={str(p)!r} has a header but no data rows; pass a CSV with at least one data row"
        )
    check_field_counts(text, sep, f"data.path={str(p)!r}")
    return frame, p, sha256, sep
