"""Starting a sweep's local worker processes, first thing.

Each worker pays ~5 s of imports (Lightning, torch, MLflow). pipelines/sweep.py starts them as
soon as the command line has composed (before the coordinator's own checks and imports), and
the coordinator creates the study and its parent run before importing torch and Lightning, so
the worker finds work the moment its imports are done (benchmarks/README.md). So this module
imports nothing heavy; the worker imports `dropout_risk.sweep.worker` itself, computes the study name
the coordinator will use and waits for the coordinator to create the study
(sweep.worker.worker_process).
"""

from __future__ import annotations

import multiprocessing as mp
import os

from omegaconf import DictConfig


def threads_per_worker(n_workers: int) -> int:
    """Torch threads for each of `n_workers` processes on this machine."""
    return max(1, (os.cpu_count() or 1) // max(n_workers, 1))


def start_local_workers(cfg: DictConfig) -> list[mp.Process]:
    """The `sweep.n_workers - 1` extra local processes of a coordinator (none for role=worker
    or report: those run on their own)."""
    s = cfg.sweep
    if s.role not in ("auto", "coordinator") or s.n_workers <= 1:
        return []
    from dropout_risk.config.saved import to_container

    ctx = mp.get_context("spawn")
    procs = []
    for _ in range(s.n_workers - 1):
        p = ctx.Process(target=_worker_main, args=(to_container(cfg), s.study, threads_per_worker(s.n_workers)))
        p.start()
        procs.append(p)
    return procs


def stop_workers(procs: list[mp.Process]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.join()


def _worker_main(cfg_container: dict, study_name: str | None, n_threads: int) -> None:
    from dropout_risk.sweep.worker import worker_process

    worker_process(cfg_container, study_name, n_threads)
