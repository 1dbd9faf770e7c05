"""Helpers shared by the tests, imported as ``from helpers import ...`` (pyproject puts tests/ on
the path): the repository's paths, the small sizes every test run uses, running a pipeline script
as a user would, the browser for the UI checks, and where the shared real data lives.

The real data files are never copied into the project: they are read from ``shared/data`` beside
the repository clone (``/work/shared/data`` for ``/work/main``), and the tests that need them skip
with a reason when that folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else "python"

# What every test run shrinks: a small cohort, few epochs.
TINY = ["data.n_students=1200", "trainer.max_epochs=3", "data.batch_size=128", "model.hidden=[16,8]"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
UCI_DROPOUT_CSV = SHARED_DATA / "uci_dropout" / "data.csv"
STUDENT_MAT_CSV = SHARED_DATA / "uci_student_performance" / "student-mat.csv"


def run_pipeline(script: str, *args: str, cwd: Path, timeout: float = 300):
    """Run a pipeline script as a user would; returns the CompletedProcess."""
    import subprocess

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([PYTHON, str(ROOT / "pipelines" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def chromium_path() -> str:
    """Debian's chromium for the browser checks: skipped with a reason when it is missing, a
    failure when DROPOUT_RISK_REQUIRE_SERVICES=1 (as in .ci/run)."""
    import shutil

    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        reason = "chromium is not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("DROPOUT_RISK_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}, and DROPOUT_RISK_REQUIRE_SERVICES=1 requires the browser check")
        pytest.skip(reason)
    return path


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
