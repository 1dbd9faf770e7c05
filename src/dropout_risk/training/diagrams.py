"""Per-epoch reliability diagrams drawn beside training, in another process.

A run with `tracking.reliability_every_n_epochs=1` draws one diagram per epoch for the UI's image
grid; drawn after fit they were half of a 100-epoch run's time (~0.19 s each: render, PNG and WebP
encoding). Training uses one thread (trainer.num_threads=1), so a second core is idle: one spawned
process (forked) draws each epoch's diagram as the epoch ends and writes its grid files (MLflow's
images/<key>+step+<n>+... naming, tracking/run.py log_pixels), and the run uploads the folder in
one call after fit; what it has not started by then, this process draws too. Below POOL_MIN
diagrams, on one core or without fork, they are all drawn after fit in this process.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import lightning.pytorch as pl
import numpy as np

from dropout_risk.plots.grid_files import draw_grid_files, warm

POOL_MIN = 6  # per-epoch diagrams from which a drawing process pays off (its start-up ~1 s)


def pool_worth_it(n_diagrams: int) -> bool:
    import multiprocessing

    return (n_diagrams >= POOL_MIN and (os.cpu_count() or 1) >= 2
            and "fork" in multiprocessing.get_all_start_methods())  # elsewhere: drawn after fit, in this process


class EpochDiagrams(pl.Callback):
    """Submits each drawn epoch's diagram (epoch % every == 0) to the drawing process as the epoch
    ends; after EpochValidation, whose probabilities it reads. `finish()` waits for them and
    returns the folder of grid files and the epochs drawn."""

    def __init__(self, y: np.ndarray, every: int, key: str, title: str) -> None:
        import multiprocessing

        self.y, self.every, self.key, self.title = y, every, key, title
        # fork, as torch's own DataLoader workers: the child starts at once with matplotlib loaded and
        # never touches torch; spawn would re-import the caller's main module (and need its guard)
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
        self.pool.submit(warm)
        self.folder = tempfile.mkdtemp(prefix="reliability-grid-")
        self.jobs: dict[int, Future] = {}
        self.args: dict[int, tuple] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = len(pl_module.val_probs)
        if epoch and epoch % self.every == 0 and epoch not in self.jobs:
            self.args[epoch] = (self.y, pl_module.val_probs[epoch - 1], f"{self.title} · epoch {epoch}", self.key,
                                epoch, self.folder)
            self.jobs[epoch] = self.pool.submit(draw_grid_files, *self.args[epoch])

    def finish(self, skip: int | None = None) -> tuple[Path, list[int]]:
        """Wait for the drawings; drop epoch `skip`'s files (the final diagram is drawn again, with
        its verdict and references). Raises what a drawing raised."""
        try:
            # what the drawing process has not started, this process draws too: two cores at the end
            # (a short fit leaves most of them; a long one, few)
            done = {}
            for epoch, job in reversed(self.jobs.items()):  # from the last, one at a time, while the
                if not job.cancel():  # drawing process goes on from the first: it has this one and the rest
                    break
                done[epoch] = draw_grid_files(*self.args[epoch])
            done.update({epoch: job.result() for epoch, job in self.jobs.items() if not job.cancelled()})
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        folder = Path(self.folder)
        if skip in done:
            for f in folder.glob(f"{done.pop(skip)}*"):
                f.unlink()
        return folder, sorted(done)

    def close(self) -> None:
        """After a failure: stop the process and remove the files."""
        import shutil

        self.pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.folder, ignore_errors=True)
