"""The tracking store: URIs, the client, experiments, reachability, the UI command."""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from mlflow import MlflowClient

from dropout_risk.errors import TrackingError
from dropout_risk.tracking.process import close_dead_runs

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

SQLITE = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` store (relative to the working directory unless
    absolute); None for any other store."""
    return Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None


def resolve_uri(uri: str) -> str:
    """Make a relative `sqlite:///path` absolute (against the working directory), creating
    its folder, so that the store does not move when a process changes directory."""
    path = sqlite_path(uri)
    if path is not None and not path.is_absolute():
        path = path.resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLITE + str(path)
    return uri


def client(uri: str) -> MlflowClient:
    """The one way this package opens a store: MlflowClient on the resolved URI. The first time a
    process opens a store (every pipeline start does), a local SQLite store is created or migrated
    under a file lock (MLflow's migration is not safe when several processes start together on a
    new store), and the RUNNING runs of this host whose process died are closed as KILLED."""
    resolved = resolve_uri(uri)
    if resolved not in _opened:
        with _opening:
            if resolved not in _opened:
                _first_open(resolved)
                _opened.add(resolved)
    return MlflowClient(tracking_uri=resolved)


_opened: set[str] = set()  # stores this process has opened (resolved URIs)
_opening = threading.Lock()
LOCK_TIMEOUT_S = 120.0  # MLflow's migration of a new store takes ~2 s


def _first_open(uri: str) -> None:
    import logging

    # MLflow's INFO lines on creating and migrating a new store's tables are not for our users
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    check_tracking(uri)  # a tracking server: reachable and accepting us, or one line (not minutes of retries)
    path = sqlite_path(uri)
    with store_lock(path) if path is not None else nullcontext():
        # MlflowClient() creates and migrates a new SQLite store (MLflow then keeps it per process)
        store = MlflowClient(tracking_uri=uri)
        close_dead_runs(store, note=lambda line: print(line, file=sys.stderr, flush=True))


@contextmanager
def store_lock(db: Path, timeout_s: float | None = None):
    """An exclusive lock on `<db>.lock` beside a SQLite store (flock: released when the process
    dies, so it never goes stale); a TrackingError if another process holds it for `timeout_s`."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: unlocked, as MLflow itself is
        yield
        return
    timeout_s = LOCK_TIMEOUT_S if timeout_s is None else timeout_s
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TrackingError(f"the tracking store {db} stayed locked by another process for "
                                        f"{timeout_s:.0f} s ({f.name}): is a process creating it hung?") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def missing_store(uri: str) -> Path | None:
    """The absolute path of a SQLite store file that does not exist yet (nothing was logged
    there); None when the store exists or is not SQLite."""
    path = sqlite_path(uri)
    return path.resolve() if path is not None and not path.exists() else None


def default_artifact_root(uri: str) -> str | None:
    """`artifacts/` beside a SQLite store's file; None for other stores (the server decides)."""
    path = sqlite_path(uri)
    return str(path.parent / "artifacts") if path is not None else None


def resolve_artifact_location(location: str | None) -> str | None:
    if not location or "://" in location or location.startswith("mlflow-artifacts:"):
        return location
    path = Path(location).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def _check_local_folder(uri: str, folder: Path) -> None:
    """A local store's folder must be (or become) a writable directory: one line, before any run."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise TrackingError(f"tracking.uri={uri}: the store's folder {folder} is not a writable directory "
                            f"({exc.strerror or exc}); pass tracking.uri=sqlite:///<a writable folder>/mlflow.db") from None


def check_tracking(uri: str, timeout_s: float = 5.0) -> None:
    """Fail within seconds, with one line, when a tracking server is unreachable or refuses us
    (MLflow's own client would retry for minutes). Credentials come only from the environment
    (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD / MLFLOW_TRACKING_TOKEN)."""
    path = sqlite_path(uri)
    if path is not None:
        _check_local_folder(uri, path.resolve().parent)
    if not uri.startswith(("http://", "https://")):
        return
    if "@" in uri.split("://", 1)[1].split("/", 1)[0]:
        raise TrackingError("tracking.uri contains credentials: set MLFLOW_TRACKING_USERNAME and "
                            "MLFLOW_TRACKING_PASSWORD in the environment instead")
    import urllib.error
    import urllib.request

    request = urllib.request.Request(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    elif token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return
    except urllib.error.HTTPError as exc:
        raise TrackingError(refusal(uri, exc.code, _body(exc), bool(user and password or token))) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"tracking server {uri} is unreachable ({reason}): start it (make tracking-server) "
                            "or pass tracking.uri=http://HOST:PORT") from None


def refusal(uri: str, code: int, body: str, credentials: bool) -> str:
    """One line for a tracking server's refusal: MLflow's host check (HTTP 403 "Invalid Host
    header": the server does not answer to the name the client used) is not a credentials problem."""
    if code == 403 and "invalid host header" in body.lower():
        netloc = uri.split("://", 1)[1].split("/", 1)[0]
        return (f"tracking server {uri} refused the Host header {netloc!r} (HTTP 403 Invalid Host header): start "
                f"the server with --allowed-hosts including {netloc} (make tracking-server ALLOWED_HOSTS={netloc})")
    if code == 401 and not credentials:
        return (f"tracking server {uri} requires credentials (HTTP 401): set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD in the environment")
    if code == 401:
        return (f"tracking server {uri} refused the credentials (HTTP 401): check MLFLOW_TRACKING_USERNAME / "
                "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")
    if code == 403:
        return (f"tracking server {uri} refused this user (HTTP 403 {body.strip()[:80] or 'Forbidden'}): set "
                "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD of a user with access")
    return f"tracking server {uri} answered HTTP {code}: is it an MLflow server?"


def _body(exc) -> str:
    try:
        return exc.read(2000).decode(errors="replace")
    except Exception:  # noqa: BLE001 - the body only refines the message
        return ""


def ui_command(uri: str, port: int = 5000) -> str:
    """The one command that opens the MLflow UI on this store, bound to loopback."""
    import shlex

    uri = resolve_uri(uri)
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser (a tracking server is already serving the UI)"
    # this interpreter's own mlflow (the venv's), so the command runs as printed without activating it
    here = Path(sys.executable).parent / "mlflow"
    mlflow = shlex.quote(str(here)) if here.exists() else "mlflow"
    return f"{mlflow} ui --backend-store-uri {shlex.quote(uri)} --host 127.0.0.1 --port {port}"


def runs_url(experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    # The UI opens in its GenAI view; this query parameter selects the training-runs view.
    return f"{host}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def get_experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(
            name,
            artifact_location=resolve_artifact_location(artifact_location),
            tags={"mlflow.experimentKind": "custom_model_development"},
        )
    except Exception:  # another process created it between our get and create
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id
