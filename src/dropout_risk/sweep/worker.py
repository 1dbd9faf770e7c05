"""The entry point of a spawned worker process: wait for the study, then work."""

from __future__ import annotations

import os
import time

import optuna
from omegaconf import OmegaConf

from dropout_risk.sweep.space import default_study_name
from dropout_risk.sweep.storage import make_storage
from dropout_risk.sweep.study import make_pruner, make_sampler
from dropout_risk.sweep.trial import work


def worker_process(cfg_container: dict, study_name: str | None, n_threads: int, wait_s: float = 300.0) -> None:
    """Entry point of a spawned worker process (sweep.workers.start_local_workers). It is started
    before the coordinator has created the study, so its imports overlap the coordinator's; it
    waits for the study (`study_name`, None: the default name) and its parent run, then takes
    trials until none is waiting."""
    import gc
    import signal

    import torch

    import dropout_risk.training.train  # noqa: F401  (every import a trial needs, done while the study is made)
    from dropout_risk.config.schema import register_configs

    cfg = OmegaConf.create(cfg_container)
    if not cfg.tracking.uri.startswith(("http://", "https://")):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (0.5 s of opening the local store)

    def log(msg: str) -> None:
        print(msg, flush=True)

    register_configs()
    gc.freeze()  # the imported modules: fewer objects for every collection, a 1.5 s faster exit
    torch.set_num_threads(n_threads)
    cfg.trainer.num_threads = n_threads
    study_name = study_name or default_study_name(cfg)
    storage = make_storage(cfg.sweep.storage, cfg.sweep.heartbeat_s)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                study = optuna.load_study(study_name=study_name, storage=storage, sampler=make_sampler(cfg, os.getpid()),
                                          pruner=make_pruner(cfg))
                if "parent_run_id" in study.user_attrs:
                    break
            except KeyError:
                pass
            if time.monotonic() > deadline:
                log(f"worker {os.getpid()}: study {study_name} did not appear within {wait_s:.0f} s; exiting")
                return
            time.sleep(0.2)
        n = work(cfg, study, study.user_attrs["parent_run_id"], log=log)
        log(f"worker {os.getpid()}: ran {n} trial(s)")
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
