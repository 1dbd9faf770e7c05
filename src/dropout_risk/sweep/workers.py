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
import signal
import sys
import threading
import time

from omegaconf import DictConfig

COORDINATOR_GRACE_S = 15.0  # after its coordinator died, a worker closing its trial longer than this is ended
# (5 s was not always enough on a loaded 2-core machine: CI saw a worker ended mid-close, its runs left RUNNING)


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
    watch_coordinator()  # first: the coordinator may die during the imports
    try:
        from dropout_risk.sweep.worker import worker_process

        worker_process(cfg_container, study_name, n_threads)
    except CoordinatorDied:  # outside a trial (imports, waiting): nothing to close; the watcher said why
        pass


class CoordinatorDied(KeyboardInterrupt):
    """Raised in a local worker's main thread when its coordinator process is gone (SIGKILL, a
    crash): the worker stops as on Ctrl-C, so its running trial is marked failed with
    outcome=interrupted (re-run when the sweep resumes) and its MLflow run ends KILLED, tagged
    `error: interrupted (CoordinatorDied)`."""


def watch_coordinator(poll_s: float = 1.0, grace_s: float = COORDINATOR_GRACE_S) -> threading.Thread:
    """In a worker process started by start_local_workers: a daemon thread that waits for the
    coordinator (the parent process) to die, then raises CoordinatorDied in the main thread
    (through SIGUSR1, which also interrupts a sleep or a wait there) and ends the process if it is
    still there `grace_s` later. The parent's death is seen at once through multiprocessing's parent
    sentinel (a pipe that closes when the parent exits) and, every `poll_s`, as a changed parent pid
    (a process the coordinator forked could keep that pipe open)."""
    parent = mp.parent_process()
    ppid = parent.pid if parent is not None and parent.pid else os.getppid()
    main = threading.main_thread().ident

    def interrupt(signum, frame):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # once
        raise CoordinatorDied(f"the sweep's coordinator process {ppid} died")

    signal.signal(signal.SIGUSR1, interrupt)

    def watch() -> None:
        from multiprocessing.connection import wait

        while os.getppid() == ppid:
            if parent is not None and parent.sentinel is not None:
                if wait([parent.sentinel], timeout=poll_s):
                    break
            else:
                time.sleep(poll_s)
        print(f"worker {os.getpid()}: its coordinator (pid {ppid}) died; closing its trial and stopping",
              file=sys.stderr, flush=True)
        signal.pthread_kill(main, signal.SIGUSR1)
        time.sleep(grace_s)
        print(f"worker {os.getpid()}: still closing after {grace_s:.0f} s; ended (the sweep's next run "
              "re-runs its trial)", file=sys.stderr, flush=True)
        os._exit(1)

    thread = threading.Thread(target=watch, name="coordinator-watch", daemon=True)
    thread.start()
    return thread
