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

# What every test run shrinks: a small cohort, few epochs, and no figures (the lab page, the flow,
# calibration and reliability figures and loss.png cost ~0.8 s of a 1 s run); tests of those turn
# them back on: FIGURES for the final reliability diagram and loss.png, ARTIFACTS for all of them.
TINY = ["data.n_students=1200", "trainer.max_epochs=3", "data.batch_size=128", "model.hidden=[16,8]",
        "mechanism.figure=false", "mechanism.page=false", "calibration.figure=false",
        "tracking.reliability_every_n_epochs=1000", "tracking.figures=false",
        "tracking.log_pyfunc=false"]  # ~0.2 s per run; tests/predict log it (and check that train() does)
FIGURES = ["tracking.figures=true"]
ARTIFACTS = [*FIGURES, "mechanism.figure=true", "mechanism.page=true", "calibration.figure=true",
             "tracking.reliability_every_n_epochs=1"]

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


MLFLOW = str(ROOT / ".venv" / "bin" / "mlflow") if (ROOT / ".venv").exists() else "mlflow"
# uvicorn's error when another process holds the port: "[Errno 98] ... address already in use"
_PORT_TAKEN = ("address already in use", "errno 98")


def _pick_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_health(base: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
        return resp.read() == b"OK"


def stop_process_group(proc, grace: float = 20) -> None:
    """SIGTERM to the whole process group led by ``proc`` (started with start_new_session=True:
    `mlflow server`, its uvicorn supervisor and workers, job consumers), SIGKILL to what is left
    after ``grace`` seconds; reaps ``proc``."""
    import signal
    import subprocess
    import time

    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        proc.wait(timeout=10)
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def start_mlflow_server(args, cwd: Path, log_dir: Path | None = None, env: dict | None = None, tries: int = 5,
                        timeout: float = 240, probe=None, ports=(), command=("server",),
                        listening_line=r"running on https?://127\.0\.0\.1:{port}\b"):
    """Start ``mlflow server *args --host 127.0.0.1 --port <port>`` in its own process group and
    return ``(process, port)`` once it is ready; stop it with stop_process_group. ``command``:
    another mlflow subcommand that takes --host/--port (("models", "serve"): a served model),
    whose output says it listens by ``listening_line`` (a regex with {port}).

    The port is picked free just before the start, so another process may take it in between.
    Ready means: the server is alive, its output says *it* listens on the port (uvicorn's
    "running on http://127.0.0.1:<port>": another server on that port can answer /health while
    ours is still importing), and ``probe(base_url)`` holds (default: GET /health answers OK).
    If the output shows the port was taken (EADDRINUSE), the group is stopped and a new port
    tried, ``tries`` times in all; an exit for any other reason fails at once with the server's
    output (a new port would not fix it). ``ports``: ports to try first (tests of this helper).
    Each attempt's output goes to ``log_dir/mlflow-server-<port>.log`` (default: ``cwd``).

    In a fixture: ``proc, port = start_mlflow_server(...)``, then ``try: yield ... finally:
    stop_process_group(proc)``."""
    import re
    import subprocess
    import time

    probe = probe or _mlflow_health
    log_dir = Path(log_dir or cwd)
    candidates = iter(ports)
    failures = []
    for _ in range(tries):
        port = next(candidates, None) or _pick_port()
        log_path = log_dir / f"mlflow-server-{port}.log"
        listening = re.compile(listening_line.format(port=port))
        with open(log_path, "w") as log:
            proc = subprocess.Popen([MLFLOW, *command, *args, "--host", "127.0.0.1", "--port", str(port)],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=cwd, env=env)
        deadline = time.monotonic() + timeout
        try:
            while True:
                exited = proc.poll() is not None  # before reading: then the output is complete
                output = log_path.read_text(errors="replace")
                if any(m in output.lower() for m in _PORT_TAKEN):
                    failures.append(f"port {port} taken")
                    break
                if exited:
                    pytest.fail(f"mlflow {' '.join(command)} exited with {proc.returncode} before it was ready "
                                f"(port {port}): {output[-2000:]}")
                if listening.search(output):
                    try:
                        if probe(f"http://127.0.0.1:{port}"):
                            return proc, port
                    except Exception:  # noqa: BLE001 - not up yet
                        pass
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow {' '.join(command)} on port {port} not ready within {timeout:.0f} s: {output[-2000:]}")
                time.sleep(0.5)
        except BaseException:
            stop_process_group(proc)
            raise
        stop_process_group(proc)
    pytest.fail(f"mlflow {' '.join(command)} did not start in {tries} tries: {', '.join(failures)}")



def run_statuses(uri: str) -> dict[str, str]:
    """run id -> status of every run (any experiment, deleted ones too) of a local SQLite store,
    read from its database: MlflowClient.search_runs loads every run's metrics, params and tags
    (0.25 s for 50 runs), this reads two columns (1 ms). For the bad-input tests that check that
    no run was left behind."""
    import sqlite3
    from contextlib import closing

    assert uri.startswith("sqlite:///"), uri
    path = Path(uri[len("sqlite:///"):])
    if not path.exists():
        return {}
    with closing(sqlite3.connect(path, timeout=30)) as db:
        return dict(db.execute("SELECT run_uuid, status FROM runs"))
