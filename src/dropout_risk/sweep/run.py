"""run_sweep: the Optuna study around train(), a learning-rate scan charted against 2/λ_max, then TPE
refinement inside the stable range the scan found.

All planned trials are created up front as WAITING trials (the scan grid with fixed learning
rates, the refine trials with no fixed parameters, so TPE samples them when they start).
Workers claim WAITING trials through the storage, so any number of processes, on one machine
(journal file) or many (PostgreSQL), share the work and the study ends at exactly its planned
count. Running the same command again resumes: finished trials are kept, trials whose process
died are marked failed and re-enqueued, and their MLflow runs are closed as KILLED.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import optuna
from omegaconf import DictConfig

from dropout_risk.console import fit
from dropout_risk.errors import SweepError
from dropout_risk.sweep.baselines import fit_sweep_baselines
from dropout_risk.sweep.report import SweepResult, report, sharpness_at_init
from dropout_risk.sweep.space import lr_range, validate_sweep
from dropout_risk.sweep.storage import make_storage
from dropout_risk.sweep.study import close_orphan_runs, effective_trials, open_study, recover_dead_trials
from dropout_risk.sweep.trial import act_as_coordinator, work
from dropout_risk.sweep.workers import start_local_workers, stop_workers, threads_per_worker
from dropout_risk.tracking.names import TAG_STUDY, TAG_SWEEP_ID, sweep_run_name
from dropout_risk.tracking.run import Run
from dropout_risk.tracking.store import client

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_sweep(cfg: DictConfig, overrides: list[str] | None = None, log=print,
              workers: list | None = None, on_imported: Callable[[], None] | None = None) -> SweepResult | None:
    """Create or resume the study, run the trials (in `sweep.n_workers` processes), report.
    role=worker joins an existing study and only works; role=report only reports. `workers`:
    local worker processes already started (pipelines/sweep.py starts them as soon as the
    command line composed); None: started here. `on_imported`: called once torch and Lightning
    are imported, which the coordinator does only after creating the study and its parent run
    (the command line freezes the garbage collector's view of the imports there)."""
    from dropout_risk.tracking.store import check_tracking

    s = cfg.sweep
    procs = list(workers or [])
    try:
        validate_sweep(cfg)
        check_tracking(cfg.tracking.uri)
        if s.role in ("auto", "coordinator") and s.n_workers > 1:
            make_storage(s.storage, s.heartbeat_s)  # fail here, once, if the storage is unusable
            if workers is None:
                procs = start_local_workers(cfg)
        result = _coordinate(cfg, overrides or [], log, threads_per_worker(s.n_workers), on_imported)
    except KeyboardInterrupt:
        for p in procs:  # they got the same Ctrl-C and close their own trials
            p.join(timeout=30)
        raise
    except BaseException:
        stop_workers(procs)  # the coordinator could not go on: workers must not act on their own
        raise
    for p in procs:
        p.join()
    return result


def _coordinate(cfg: DictConfig, overrides: list[str], log, n_threads: int,
                on_imported: Callable[[], None] | None = None) -> SweepResult | None:
    s = cfg.sweep
    # a scan at multiples of 2/lambda_max(0) needs lambda_max(0) before its trials exist
    lam0 = sharpness_at_init(cfg) if s.lr_over_gd_threshold and s.role in ("auto", "coordinator") else None
    study, created = open_study(cfg, create=s.role in ("auto", "coordinator"), lam0=lam0)
    parent_id = study.user_attrs.get("parent_run_id")
    if s.role == "worker":
        if not parent_id:
            raise SweepError(f"sweep.study={study.study_name!r} has no parent run yet; start the coordinator first")
        n = work(cfg, study, parent_id, log)
        log(fit(f"worker done: ran {n} trial(s) of study {study.study_name}"))
        return None

    if created:  # before the parent run: workers start as soon as it exists
        study.set_user_attr("overrides", list(overrides))  # what each trial logs as its overrides
    run = _parent_run(cfg, study, parent_id, overrides)
    act_as_coordinator(s.role in ("auto", "coordinator"))
    with run.failing_on_error():
        # Only now torch and Lightning (seconds of imports): local workers already train meanwhile.
        import torch

        import dropout_risk.training.train  # noqa: F401

        if on_imported is not None:
            on_imported()
        baselines, y = fit_sweep_baselines(cfg, run)  # once per sweep, while the workers train
        if s.role in ("auto", "coordinator"):
            torch.set_num_threads(n_threads)
            if "sharpness_init" not in study.user_attrs:
                t0 = time.perf_counter()
                lam = sharpness_at_init(cfg)
                study.set_user_attr("sharpness_init", lam)
                log(fit(f"sharpness at init: lambda_max = {lam:.4g}, plain-GD threshold 2/lambda_max = "
                        f"{2 / lam if lam > 0 else math.inf:.4g} ({time.perf_counter() - t0:.1f} s)"))
            recovered = recover_dead_trials(study, cfg.tracking.uri, run.run_id)
            if recovered:
                log(f"resuming: {recovered} interrupted trial(s) re-enqueued")
            done = sum(t.state.is_finished() for t in effective_trials(study))
            planned = int(study.user_attrs["planned"])
            log(fit(f"study {study.study_name}: {done}/{planned} trials done"
                    + (" (new)" if created else " (resuming)") + f", {s.n_workers} worker(s)"))
            wcfg = copy.deepcopy(cfg)
            wcfg.trainer.num_threads = n_threads
            _wait_until_finished(wcfg, study, run.run_id, log)
        result = report(cfg, study, run, baselines, y, log=log)
        run.end("FINISHED")
        return result


def _wait_until_finished(cfg: DictConfig, study: optuna.Study, parent_run_id: str, log, poll_s: float = 0.1,
                         check_s: float = 2.0) -> None:
    """Until every planned trial is finished: run retries of trials whose worker died (local
    processes found by pid, remote ones by Optuna's heartbeat) and wait for other workers.
    Whether all are finished is read every `poll_s` (one read of the storage), so the report
    starts within that of the last trial; dead workers are looked for every `check_s`."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    last_check = -math.inf
    while True:
        if time.monotonic() - last_check >= check_s:
            if is_heartbeat_enabled(study._storage):
                optuna.storages.fail_stale_trials(study)
            recover_dead_trials(study, cfg.tracking.uri, parent_run_id)
            last_check = time.monotonic()
        work(cfg, study, parent_run_id, log)
        if all(t.state.is_finished() for t in effective_trials(study)):
            close_orphan_runs(study, cfg.tracking.uri, parent_run_id)
            return
        time.sleep(poll_s)


def _parent_run(cfg: DictConfig, study: optuna.Study, parent_id: str | None, overrides: list[str]) -> Run:
    from dropout_risk.tracking.provenance import provenance_tags

    if parent_id:
        store = client(cfg.tracking.uri)
        store.update_run(parent_id, status="RUNNING")
        return Run(store, parent_id)
    run = Run.start(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location,
                    sweep_run_name(cfg, *lr_range(cfg)),
                    tags={TAG_STUDY: study.study_name, "sweep_kind": "lr_divergence", "seed": str(cfg.seed),
                          "mlflow.experimentKind": "custom_model_development", **provenance_tags()})
    run.set_tags({TAG_SWEEP_ID: run.run_id})
    study.set_user_attr("parent_run_id", run.run_id)
    run.log_config(cfg, overrides)
    return run
