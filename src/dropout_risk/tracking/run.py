"""One MLflow run and its lifecycle: params, the config, batched metrics, figures and files,
and the one failure wrapper (FAILED on error, KILLED on Ctrl-C).

We talk to MLflow through `MlflowClient` with an explicit tracking URI (no global active run),
so several runs (a sweep's parent and its trials) can be open in one process, and Lightning's
`MLFlowLogger` (which defaults to the refused `./mlruns` file store and sends one request per
logging call) is not needed.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag

from dropout_risk.tracking.names import (
    CONFIG_ARTIFACT,
    OVERRIDES_ARTIFACT,
    ROOT_COPIES,
    TAG_ERROR,
    grid_image_stem,
)
from dropout_risk.tracking.process import process_tags
from dropout_risk.tracking.store import client, get_experiment_id

_BATCH = 1000  # MLflow accepts at most 1000 metrics (100 params) per log_batch request


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


class Run:
    """One MLflow run, written through MlflowClient. Metrics are buffered and sent with
    `log_batch` (one synchronous `log_metric` costs ~3 ms; 1,000 metrics in a batch ~60 ms)."""

    def __init__(self, client: MlflowClient, run_id: str, claim: bool = True) -> None:
        """A handle on an existing run for this process to write (a resumed sweep's parent run):
        `claim` tags it with this process (host, pid), so that another start does not take it for
        a run whose process died (tracking/process.py). Run.start tags new runs as it creates them."""
        self.client, self.run_id = client, run_id
        self._metrics: list[Metric] = []
        self.parent_run_id: str | None = None  # a nested run's parent (Run.start sets it)
        self._images_tagged = False  # mlflow.loggedImages set (the UI shows image charts)
        self.ended = False
        if claim:
            self.set_tags(process_tags())

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
        store = client(uri)
        exp_id = get_experiment_id(store, experiment, artifact_location)
        all_tags = {**(tags or {}), **process_tags()}  # who writes it, from its first moment
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = store.create_run(exp_id, run_name=run_name, tags=all_tags)
        out = cls(store, run.info.run_id, claim=False)
        out.parent_run_id = parent_run_id
        return out

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

    def log_dataset(self, data_name: str, fingerprint: dict, columns: dict[str, Any]) -> None:
        """The data as MLflow's dataset input of this run and of its parent (a sweep's parent gets
        it once per process): tracking/dataset.py."""
        from dropout_risk.tracking.dataset import log_dataset

        log_dataset(self.client, [self.run_id, *([self.parent_run_id] if self.parent_run_id else [])],
                    data_name, fingerprint, columns)

    def log_config(self, cfg, overrides: Iterable[str] = ()) -> None:
        """The resolved config as params and as a file Hydra can run again, and this
        invocation's overrides."""
        from omegaconf import OmegaConf

        from dropout_risk.config.saved import saved_config_yaml, to_container

        self.log_params(flatten(to_container(cfg)))
        self.log_text(saved_config_yaml(cfg), CONFIG_ARTIFACT)
        self.log_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))), OVERRIDES_ARTIFACT)

    def log_metrics(self, metrics: dict[str, float], step: int = 0, flush: bool = False) -> None:
        ts = int(time.time() * 1000)
        self._metrics.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())
        if flush:
            self.flush()

    def log_metric_series(self, key: str, values: Iterable[float], first_step: int = 1, flush: bool = True,
                          every: int = 1, last: bool = False) -> None:
        """values[i] at step first_step + i; with `every` > 1 only step 1, every `every`-th step
        and, with `last`, the series' last step."""
        ts = int(time.time() * 1000)
        values = list(values)
        self._metrics.extend(Metric(key, float(v), ts, step) for step, v in enumerate(values, start=first_step)
                             if every == 1 or step == 1 or step % every == 0
                             or (last and step == first_step + len(values) - 1))
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
        """The figure as a PNG artifact (saved once; also at the root when ROOT_COPIES names it)."""
        self.log_written(artifact_file, lambda path: fig.savefig(path, format="png", dpi=fig.dpi))

    def log_image(self, fig, key: str, step: int, also_as: str | None = None, more_steps: Iterable[int] = ()) -> None:
        """A figure into the UI's image grid (compare runs by `key`, scrub through `step`).
        The Agg pixel buffer goes straight to MLflow (no PNG encode/decode round trip: ~2x faster).
        `also_as`: the same pixels saved as that PNG artifact too (one render instead of two);
        `more_steps`: the same pixels at those steps of the grid too."""
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        self.log_pixels(np.asarray(canvas.buffer_rgba())[..., :3].copy(), key, step, also_as, fig.dpi, more_steps)

    def log_pixels(self, pixels, key: str, step: int, also_as: str | None = None, dpi: float = 100,
                   more_steps: Iterable[int] = ()) -> None:
        """An RGB array [H, W, 3] uint8 into the image grid at `step` and `more_steps`, and as the
        PNG `also_as`: encoded once (PNG, and the WebP the grid shows), the same files at every step.

        Written as MLflow's `log_image(key=, step=)` writes them (images/<key with / as ~>+step+<n>
        +timestamp+<ms>+<uuid>.png and its +compressed.webp; the run tag mlflow.loggedImages), in
        one upload, except that the WebP keeps the full size: MLflow's 256 px thumbnail makes a
        diagram's text unreadable in the grid."""
        from PIL import Image

        image = Image.fromarray(pixels)
        ts = int(time.time() * 1000)
        with tempfile.TemporaryDirectory() as tmp:
            png, webp = Path(tmp) / "image.png", Path(tmp) / "image.webp"
            image.save(png, dpi=(dpi, dpi))
            image.save(webp, quality=90)
            folder = Path(tmp) / "images"
            folder.mkdir()
            for s in dict.fromkeys([step, *more_steps]):
                stem = grid_image_stem(key, s, ts)
                os.link(png, folder / f"{stem}.png")
                os.link(webp, folder / f"{stem}+compressed.webp")
            self.client.log_artifacts(self.run_id, str(folder), "images")
            if also_as:
                self.log_written(also_as, lambda path: os.link(png, path))
        self._tag_images()

    def log_image_files(self, folder: str | os.PathLike) -> None:
        """Grid images written elsewhere under MLflow's names (training/diagrams.py) in one upload."""
        if not any(Path(folder).iterdir()):
            return
        self.client.log_artifacts(self.run_id, str(folder), "images")
        self._tag_images()

    def _tag_images(self) -> None:
        """The run tag mlflow.loggedImages, once: the UI shows image charts for tagged runs only."""
        if not self._images_tagged:
            self.set_tags({"mlflow.loggedImages": "True"})
            self._images_tagged = True

    def log_torch(self, obj: Any, artifact_file: str) -> None:
        import torch

        self.log_written(artifact_file, lambda path: torch.save(obj, path))

    def log_arrays(self, artifact_file: str, **arrays) -> None:
        import numpy as np

        self.log_written(artifact_file, lambda path: np.savez_compressed(path, **arrays))

    def log_written(self, artifact_file: str, write: Callable[[Path], Any]) -> None:
        """`write(path)` a file in a temporary folder, logged as `artifact_file` (folder/name), and
        the same file at the artifact root as well when ROOT_COPIES names it (the UI's compare page
        lists top-level files only)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            write(path)
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(self.run_id, str(path), None if parent == "." else parent)
            if artifact_file in ROOT_COPIES:
                root = path.rename(path.with_name(ROOT_COPIES[artifact_file]))
                self.client.log_artifact(self.run_id, str(root))

    @contextmanager
    def failing_on_error(self, tags: dict[str, str] | None = None) -> Iterator[Run]:
        """The one failure wrapper for runs: anything raised inside ends this run FAILED (Ctrl-C
        or exit: KILLED, tagged interrupted=true), with the `error` tag and `tags`, and
        propagates. Nothing raised leaves the run as it is."""
        try:
            yield self
        except (KeyboardInterrupt, SystemExit) as exc:
            self._close_failed("KILLED", {**(tags or {}), TAG_ERROR: f"interrupted ({type(exc).__name__})",
                                          "interrupted": "true"})
            raise
        except BaseException as exc:
            self._close_failed("FAILED", {**(tags or {}), TAG_ERROR: f"{type(exc).__name__}: {exc}"[:5000]})
            raise

    def _close_failed(self, status: str, tags: dict[str, str]) -> None:
        if self.ended:
            return
        try:
            self.set_tags(tags)
        finally:
            self.end(status)

    def end(self, status: str = "FINISHED") -> None:
        """Flush and close. Safe to call twice; never leaves the run RUNNING."""
        if self.ended:
            return
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=RunStatus.to_string(RunStatus.from_string(status)))
            self.ended = True
