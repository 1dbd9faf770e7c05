"""Shared helpers for the data tests: where the shared real data lives, and writing small CSVs.

The real files are never copied into the project: they are read from ``shared/data`` beside the
repository clone (``/work/shared/data`` for ``/work/main``), and the tests that need them skip with
a reason when that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
UCI_DROPOUT_CSV = SHARED_DATA / "uci_dropout" / "data.csv"
STUDENT_MAT_CSV = SHARED_DATA / "uci_student_performance" / "student-mat.csv"


def shared_file(path: Path) -> Path:
    """``path`` if it exists, else skip the calling test with a reason."""
    if not path.is_file():
        pytest.skip(
            f"shared data file {path} not found: the real-data tests need the shared/ folder "
            "next to the repository clone (shared/data/...)"
        )
    return path


def write_csv(directory: Path, text: str | bytes, name: str = "data.csv") -> Path:
    """Write ``text`` byte-for-byte (no newline translation) and return the path."""
    path = directory / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path
