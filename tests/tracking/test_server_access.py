"""The tracking server beyond loopback: `make tracking-server` answers the names it is reached by
(--allowed-hosts) and only with MLflow's basic-auth app; a client refused by MLflow's host check
is told to fix --allowed-hosts, one refused for credentials to set MLFLOW_TRACKING_USERNAME/PASSWORD."""

from __future__ import annotations

import os
import re
import socket
import subprocess

import pytest
from helpers import ROOT, TINY, run_pipeline, start_mlflow_server, stop_process_group
from mlflow import MlflowClient

from dropout_risk.errors import TrackingError
from dropout_risk.tracking.store import check_tracking

PASSWORD = "not-on-any-command-line-7f3a"
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def _make(*args: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`make ARGS` in the repository, outside any make that runs this test."""
    base = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", *drop)}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def _server_line(out: str) -> str:
    lines = out.replace("\\\n", " ").splitlines()
    return next(ln for ln in lines if "mlflow server" in ln)


def _allowed(line: str) -> list[str]:
    return re.search(r"--allowed-hosts '([^']*)'", line).group(1).split(",")


def test_make_tracking_server_beyond_loopback_refuses_to_start_without_credentials() -> None:
    r = _make("tracking-server", "HOST=0.0.0.0", drop=("MLFLOW_AUTH_ADMIN_PASSWORD",))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error: HOST=0.0.0.0 serves other machines" in lines[0], r.stderr
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in lines[0] and "MLFLOW_TRACKING_USERNAME" in lines[0]
    assert r.stdout == ""  # nothing ran: no database made, no server started


def test_make_tracking_server_allows_the_names_it_is_reached_by() -> None:
    loop = _make("-n", "tracking-server", "PORT=5123", drop=("MLFLOW_AUTH_ADMIN_PASSWORD",))
    assert loop.returncode == 0, loop.stderr
    line = _server_line(loop.stdout)
    assert "--host 127.0.0.1" in line and "--app-name" not in line  # loopback: no authentication
    assert _allowed(line) == ["127.0.0.1", "127.0.0.1:5123", "localhost", "localhost:5123"]

    wide = _make("-n", "tracking-server", "HOST=0.0.0.0", "PORT=5123", "ALLOWED_HOSTS=tracking.example.org:5123",
                 env={"MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD})
    assert wide.returncode == 0, wide.stderr
    line = _server_line(wide.stdout)
    assert "--host 0.0.0.0" in line and "--app-name basic-auth" in line
    assert "MLFLOW_AUTH_CONFIG_PATH=mlruns/basic_auth.ini" in line
    assert {"localhost:5123", f"{socket.gethostname()}:5123", socket.gethostname(),
            "tracking.example.org:5123"} <= set(_allowed(line))
    assert PASSWORD not in wide.stdout + wide.stderr  # the password stays in the environment


def _no_runs(db) -> None:
    client = MlflowClient(f"sqlite:///{db}")
    exps = [e.experiment_id for e in client.search_experiments()]
    assert not exps or client.search_runs(exps) == []  # the refused pipeline left nothing


def _refused_pipeline(uri: str, tmp_path, message: str) -> None:
    """A training run against the refusing server: one line, exit 2."""
    r = run_pipeline("train.py", *TINY, "tracking=server", f"tracking.uri={uri}", "baselines=none", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [f"error: {message}"]


@pytest.mark.slow
def test_a_host_header_refusal_is_not_blamed_on_credentials(tmp_path, monkeypatch) -> None:
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    proc, port = start_mlflow_server(["--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                                      "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "1",
                                      "--allowed-hosts", "tracking.example.org:5000"], cwd=tmp_path)
    try:
        uri = f"http://127.0.0.1:{port}"
        with pytest.raises(TrackingError) as refused:
            check_tracking(uri)
        assert str(refused.value) == (
            f"tracking server {uri} refused the Host header '127.0.0.1:{port}' (HTTP 403 Invalid Host header): "
            f"start the server with --allowed-hosts including 127.0.0.1:{port} "
            f"(make tracking-server ALLOWED_HOSTS=127.0.0.1:{port})")
        _refused_pipeline(uri, tmp_path, str(refused.value))
    finally:
        stop_process_group(proc)
    _no_runs(tmp_path / "server.db")


@pytest.mark.slow
def test_a_basic_auth_server_asks_for_credentials(tmp_path, monkeypatch) -> None:
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs its auth extra: pip install 'mlflow[auth]'")
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    ini = tmp_path / "basic_auth.ini"  # as `make tracking-server` writes it, with a SQLite user store
    ini.write_text(f"[mlflow]\ndefault_permission = EDIT\ndatabase_uri = sqlite:///{tmp_path}/auth.db\n"
                   "admin_username = admin\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-csrf-key"}
    proc, port = start_mlflow_server(["--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                                      "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "1",
                                      "--app-name", "basic-auth"], cwd=tmp_path, env=env)
    try:
        uri = f"http://127.0.0.1:{port}"
        with pytest.raises(TrackingError) as missing:
            check_tracking(uri)
        assert str(missing.value) == (f"tracking server {uri} requires credentials (HTTP 401): set "
                                      "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment")
        _refused_pipeline(uri, tmp_path, str(missing.value))
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(TrackingError, match=r"refused the credentials \(HTTP 401\): check MLFLOW_TRACKING_USERNAME"):
            check_tracking(uri)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
        check_tracking(uri)  # the admin is let in
    finally:
        stop_process_group(proc)
    _no_runs(tmp_path / "server.db")
