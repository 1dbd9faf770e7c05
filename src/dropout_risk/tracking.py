"""Everything MLflow: store URIs, experiments, the run lifecycle, params, batched metrics,
figures, the config artifact and provenance tags.

We talk to MLflow through `MlflowClient` with an explicit tracking URI (no global active run),
so several runs (a sweep's parent and its trials) can be open in one process, and Lightning's
`MLFlowLogger` (which defaults to the refused `./mlruns` file store and sends one request per
logging call) is not needed.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag

from dropout_risk.errors import TrackingError  # noqa: F401  (re-exported)

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_BATCH = 1000  # MLflow accepts at most 1000 metrics (100 params) per log_batch request
PACKAGES = ("torch", "lightning", "mlflow", "optuna", "numpy", "pandas", "scikit-learn", "hydra-core")


def resolve_uri(uri: str) -> str:
    """Make a relative `sqlite:///path` absolute (against the working directory), creating
    its folder, so that the store does not move when a process changes directory."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(uri[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return uri


def resolve_artifact_location(location: str | None) -> str | None:
    if not location or "://" in location or location.startswith("mlflow-artifacts:"):
        return location
    path = Path(location).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def artifact_bytes(artifact_uri: str, path: str, tracking_uri: str) -> bytes | None:
    """The bytes of the artifact `path` of a run whose artifact root is `artifact_uri`: read in
    place when the root is a local folder (no MLflow round trip: ~10 ms per file saved), else
    downloaded through MLflow. None when the run has no such artifact."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(artifact_uri)
    local = (Path(unquote(parsed.path)) if parsed.scheme == "file"
             else Path(artifact_uri) if parsed.scheme == "" and artifact_uri.startswith("/") else None)
    if local is not None:
        file = local / path
        return file.read_bytes() if file.is_file() else None
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        try:
            got = mlflow.artifacts.download_artifacts(artifact_uri=f"{artifact_uri.rstrip('/')}/{path}",
                                                      dst_path=tmp, tracking_uri=tracking_uri)
        except Exception:  # noqa: BLE001 - not there (MLflow raises differently per store)
            return None
        return Path(got).read_bytes()


def runs_by_ids(client: MlflowClient, experiment_ids: list[str], run_ids: list[str]) -> dict:
    """run id -> run for these ids, in bulk (`attributes.run_id IN (...)`, 100 ids per request,
    deleted runs included)."""
    from mlflow.entities import ViewType

    found = {}
    for i in range(0, len(run_ids), 100):
        where = "attributes.run_id IN (" + ", ".join(f"'{r}'" for r in run_ids[i : i + 100]) + ")"
        token = None
        while True:
            page = client.search_runs(experiment_ids, where, run_view_type=ViewType.ALL, max_results=1000,
                                      page_token=token)
            found.update({r.info.run_id: r for r in page})
            token = page.token
            if not token:
                break
    return found


def check_tracking(uri: str, timeout_s: float = 5.0) -> None:
    """Fail within seconds, with one line, when a tracking server is unreachable or refuses us
    (MLflow's own client would retry for minutes). Credentials come only from the environment
    (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD / MLFLOW_TRACKING_TOKEN)."""
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
        if exc.code in (401, 403):
            raise TrackingError(f"tracking server {uri} refused the credentials (HTTP {exc.code}): check "
                                "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD") from None
        raise TrackingError(f"tracking server {uri} answered HTTP {exc.code}: is it an MLflow server?") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"tracking server {uri} is unreachable ({reason}): start it (make tracking-server) "
                            "or pass tracking.uri=http://HOST:PORT") from None


def ui_command(uri: str, port: int = 5000) -> str:
    """The one command that opens the MLflow UI on this store, bound to loopback."""
    uri = resolve_uri(uri)
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser (a tracking server is already serving the UI)"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port {port}"


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


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """{'optim': {'lr': 0.1}} -> {'optim.lr': '0.1'} (lists kept as one value)."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return out


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def git_state(root: Path = PROJECT_ROOT) -> tuple[str, bool | None]:
    """(commit, dirty) of the code being run; ('unknown', None) outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def git_diff_hash(root: Path = PROJECT_ROOT) -> str | None:
    """sha256 of `git diff HEAD` (tracked files): tells two dirty trees at one commit apart."""
    try:
        diff = subprocess.run(["git", "-C", str(root), "diff", "HEAD", "--no-ext-diff", "--binary"],
                              capture_output=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    import hashlib

    return hashlib.sha256(diff).hexdigest()


def provenance_tags() -> dict[str, str]:
    """git commit/dirty/diff hash, the command and package versions, as run tags. Read once per
    process (two or three git calls, ~10 ms: a sweep worker's trials would repeat them): the
    code a process runs is the code it loaded."""
    return dict(_provenance())


@functools.cache
def _provenance() -> dict[str, str]:
    commit, dirty = git_state()
    tags = {"git_commit": commit, "git_dirty": str(dirty).lower(), "command": shlex.join(sys.argv)[:5000]}
    if dirty and (diff := git_diff_hash()):
        tags["git_diff_sha256"] = diff
    tags.update({f"version.{k}": v for k, v in package_versions().items()})
    return tags


class Run:
    """One MLflow run, written through MlflowClient. Metrics are buffered and sent with
    `log_batch` (one synchronous `log_metric` costs ~3 ms; 1,000 metrics in a batch ~60 ms)."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self._metrics: list[Metric] = []
        self.ended = False

    @classmethod
    def start(
        cls,
        uri: str,
        experiment: str,
        artifact_location: str | None,
        run_name: str,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> Run:
        client = MlflowClient(tracking_uri=resolve_uri(uri))
        exp_id = get_experiment_id(client, experiment, artifact_location)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
        return cls(client, run.info.run_id)

    @property
    def experiment_id(self) -> str:
        return self.client.get_run(self.run_id).info.experiment_id

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    def log_metrics(self, metrics: dict[str, float], step: int = 0, flush: bool = False) -> None:
        ts = int(time.time() * 1000)
        self._metrics.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())
        if flush:
            self.flush()

    def log_metric_series(self, key: str, values: Iterable[float], first_step: int = 1, flush: bool = True) -> None:
        ts = int(time.time() * 1000)
        self._metrics.extend(Metric(key, float(v), ts, first_step + i) for i, v in enumerate(values))
        if flush:
            self.flush()

    def flush(self) -> None:
        while self._metrics:
            chunk, self._metrics = self._metrics[:_BATCH], self._metrics[_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_file(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, fig, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, fig, artifact_file)

    def log_image(self, fig, key: str, step: int, also_as: str | None = None) -> None:
        """A figure into the UI's image grid (compare runs by `key`, scrub through `step`).
        The Agg pixel buffer goes straight to MLflow (no PNG encode/decode round trip: ~2x faster).
        `also_as`: the same pixels saved as that PNG artifact too (one render instead of two)."""
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        self.client.log_image(self.run_id, pixels, key=key, step=step)
        if also_as:
            from PIL import Image

            self.log_written(also_as, lambda path: Image.fromarray(pixels).save(path, dpi=(fig.dpi, fig.dpi)))

    def log_torch(self, obj: Any, artifact_file: str) -> None:
        import torch

        self.log_written(artifact_file, lambda path: torch.save(obj, path))

    def log_arrays(self, artifact_file: str, **arrays) -> None:
        import numpy as np

        self.log_written(artifact_file, lambda path: np.savez_compressed(path, **arrays))

    def log_written(self, artifact_file: str, write: Callable[[Path], Any]) -> None:
        """`write(path)` a file in a temporary folder, logged as `artifact_file` (folder/name)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            write(path)
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(self.run_id, str(path), None if parent == "." else parent)

    def end(self, status: str = "FINISHED") -> None:
        """Flush and close. Safe to call twice; never leaves the run RUNNING."""
        if self.ended:
            return
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=RunStatus.to_string(RunStatus.from_string(status)))
            self.ended = True
