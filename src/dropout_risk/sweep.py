"""The Optuna study around train(): a learning-rate scan charted against 2/λ_max, then TPE
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
import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from dropout_risk.config import to_container, validate
from dropout_risk.errors import SweepError  # noqa: F401  (re-exported)
from dropout_risk.sweep_workers import start_local_workers, stop_workers, threads_per_worker
from dropout_risk.tracking import Run, flatten, resolve_uri

optuna.logging.set_verbosity(optuna.logging.WARNING)

SUMMARY_COLUMNS = ["trial", "phase", "lr", "outcome", "diverged_at_step", "train_loss", "val_loss",
                   "auroc", "ece", "brier", "duration_s", "run_id"]
RETRYABLE = ("interrupted", "worker_died")
_COORDINATOR = False  # set in the process that created/resumed the study (role=auto)


# --- configuration -------------------------------------------------------------------------


def lr_range(cfg: DictConfig) -> tuple[float, float]:
    s = cfg.sweep
    lo = s.lr_min if s.lr_min is not None else cfg.optim.scan_range[0]
    hi = s.lr_max if s.lr_max is not None else cfg.optim.scan_range[1]
    return float(lo), float(hi)


def validate_sweep(cfg: DictConfig) -> None:
    validate(cfg)
    s = cfg.sweep
    lo, hi = lr_range(cfg)
    if not (lo > 0 and hi > 0):
        raise SweepError(f"sweep.lr_min={lo}, sweep.lr_max={hi}: learning rates must be > 0")
    if not lo < hi:
        raise SweepError(f"sweep.lr_min={lo} >= sweep.lr_max={hi}: the range is empty or inverted; "
                         "pass e.g. sweep.lr_min=1e-3 sweep.lr_max=100")
    if s.n_scan < 2:
        raise SweepError(f"sweep.n_scan={s.n_scan}: a scan needs at least 2 learning rates, e.g. sweep.n_scan=24")
    if s.n_refine < 0 or s.n_workers < 1:
        raise SweepError("sweep.n_refine must be >= 0 and sweep.n_workers >= 1")
    if s.role not in ("auto", "coordinator", "worker", "report"):
        raise SweepError(f"sweep.role={s.role!r} is unknown: use auto (= coordinator), worker or report")
    if s.storage and _has_password(s.storage):
        raise SweepError("sweep.storage contains a password: put it in the environment instead "
                         "(PGPASSWORD or ~/.pgpass for PostgreSQL) and drop it from the URL")
    if s.pruner.name not in ("median", "none"):
        raise SweepError(f"sweep.pruner.name={s.pruner.name!r} is unknown: use median or none")
    search_space(cfg)


def search_space(cfg: DictConfig) -> dict[str, tuple[float, float]]:
    """sweep.search entries "key:low:high" -> {key: (low, high)}, checked."""
    space = {}
    for entry in cfg.sweep.search:
        parts = str(entry).rsplit(":", 2)
        try:
            key, low, high = parts[0], float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise SweepError(f"sweep.search entry {entry!r}: write key:low:high, e.g. "
                             "sweep.search=[optim.weight_decay:1e-5:0.1]") from None
        if not 0 < low < high:
            raise SweepError(f"sweep.search entry {entry!r}: need 0 < low < high (searched log-uniformly)")
        if not isinstance(OmegaConf.select(cfg, key), int | float) or key == "optim.lr":
            raise SweepError(f"sweep.search entry {entry!r}: {key} is no numeric config key to search over "
                             "(the learning rate is always searched)")
        space[key] = (low, high)
    return space


def lr_grid(lo: float, hi: float, n: int) -> list[float]:
    return [float(f"{v:.6g}") for v in np.geomspace(lo, hi, n)]


def trial_space(cfg: DictConfig) -> dict:
    """What makes two sweeps the same study: everything but tracking and the worker count."""
    base = to_container(cfg)
    for key in ("tracking", "tags"):
        base.pop(key, None)
    base["sweep"] = {k: v for k, v in base["sweep"].items()
                     if k not in ("study", "storage", "n_workers", "role", "heartbeat_s")}
    base["optim"].pop("lr", None)
    from dropout_risk.data.loaders import load_data

    fingerprint = dict(load_data(cfg.data, cfg.seed).fingerprint)
    fingerprint.pop("path", None)  # the same file may sit at another path on another machine
    base["data_fingerprint"] = fingerprint
    base["data"].pop("path", None)
    return base


def default_study_name(cfg: DictConfig) -> str:
    digest = hashlib.sha256(json.dumps(trial_space(cfg), sort_keys=True).encode()).hexdigest()[:8]
    optim = str(cfg.optim._target_).rsplit(".", 1)[-1].lower()
    return f"lr-{optim}-{cfg.data.kind}-{digest}"


def make_storage(url: str | None, heartbeat_s: int = 10) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL. None: the journal file under mlruns/ (several processes
    on one machine may share it; SQLite locks under parallel writers)."""
    journal = None
    if url is None:
        journal = "mlruns/optuna-journal.log"
    elif url.startswith("journal://"):
        journal = url[len("journal://"):]
    elif url.endswith((".log", ".journal")) and "://" not in url:
        journal = url
    if journal is not None:
        path = Path(journal).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "mysql"):
        raise SweepError(f"sweep.storage={url!r}: unknown storage scheme {scheme!r}; use a journal file "
                         "(path ending in .log), sqlite:///file.db or postgresql://user@host/db")
    engine_kwargs = {} if scheme == "sqlite" else {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    heartbeat = {} if scheme == "sqlite" else {
        "heartbeat_interval": heartbeat_s, "grace_period": 3 * heartbeat_s,
        "heartbeat_stale_trial_callback": _retry_failed_trial}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
    except Exception as exc:  # noqa: BLE001 - any connection failure becomes one line
        reason = str(exc).strip().splitlines()[0][:300]
        raise SweepError(f"sweep.storage: cannot open {_redact(url)}: {reason}") from None


def _has_password(url: str) -> bool:
    if "://" not in url or "@" not in url:
        return False
    creds = url.split("://", 1)[1].rsplit("@", 1)[0]
    return ":" in creds


def _redact(url: str) -> str:
    """Never print a password that came in a URL."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


def _retry_failed_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Heartbeat expired (worker died): re-enqueue the same trial so the planned count is reached."""
    _enqueue_retry(study, trial)


def _enqueue_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    # A scan trial is retried at its grid learning rate; a refine trial is sampled afresh.
    scan = trial.user_attrs.get("phase") == "scan"
    params = {"lr": trial.params.get("lr", trial.user_attrs.get("lr_planned"))} if scan else {}
    study.enqueue_trial(params, user_attrs={"phase": trial.user_attrs.get("phase", "scan"),
                                            "lr_planned": trial.user_attrs.get("lr_planned"),
                                            "retry_of": trial.number})


# --- the study --------------------------------------------------------------------------------


def open_study(cfg: DictConfig, create: bool) -> tuple[optuna.Study, bool]:
    """Create the study (enqueue every planned trial once) or load it and check that it is the
    same sweep. Returns (study, created)."""
    s = cfg.sweep
    storage = make_storage(s.storage, s.heartbeat_s)
    name = s.study or default_study_name(cfg)
    sampler, pruner = _sampler(cfg), _pruner(cfg)
    space = trial_space(cfg)
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        if not create:
            raise SweepError(f"sweep.study={name!r} does not exist in {_redact(str(s.storage or 'the journal file'))}; "
                             "start the sweep first without sweep.role=worker") from None
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                    direction="minimize", load_if_exists=True)
        if "space" not in study.user_attrs:
            study.set_user_attr("space", space)
            study.set_user_attr("planned", s.n_scan + s.n_refine)
            study.set_user_attr("created", time.time())
            lo, hi = lr_range(cfg)
            for lr in lr_grid(lo, hi, s.n_scan):
                study.enqueue_trial({"lr": lr}, user_attrs={"phase": "scan", "lr_planned": lr})
            for _ in range(s.n_refine):
                study.enqueue_trial({}, user_attrs={"phase": "refine"})
            return study, True
    if study.user_attrs.get("space") != space:
        diff = _first_difference(study.user_attrs.get("space", {}), space)
        raise SweepError(f"sweep.study={name!r} exists with a different search space or config ({diff}); "
                         "pass a new sweep.study=NAME, or the study's original settings")
    return study, False


def _first_difference(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    return f"{path}: study has {a!r}, this command {b!r}"


def effective_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's trials minus those superseded by a retry, in trial order."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return [t for t in trials if t.number not in retried]


def recover_dead_trials(study: optuna.Study, uri: str, parent_run_id: str | None) -> int:
    """Trials left RUNNING by a process that died on this machine, or failed by Ctrl-C: mark
    failed, re-enqueue, close their MLflow runs as KILLED. Returns how many were re-enqueued.
    (Workers on other machines are covered by Optuna's heartbeat on RDB storages.)"""
    from optuna.exceptions import UpdateFinishedTrialError

    host = socket.gethostname()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and pid is not None and not _alive(int(pid)):
            try:
                study._storage.set_trial_user_attr(t._trial_id, "outcome", "worker_died")
                study.tell(t.number, state=TrialState.FAIL)
            except (UpdateFinishedTrialError, ValueError, RuntimeError):
                pass  # failed by someone else (heartbeat) meanwhile
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("outcome") in RETRYABLE and t.number not in retried:
            _enqueue_retry(study, t)
            n += 1
    if parent_run_id:
        close_orphan_runs(study, uri, parent_run_id)
    return n


def close_orphan_runs(study: optuna.Study, uri: str, parent_run_id: str) -> None:
    """Child runs still RUNNING whose trial is no longer running (its process died): KILLED."""
    from mlflow import MlflowClient

    client = MlflowClient(resolve_uri(uri))
    parent = client.get_run(parent_run_id)
    live = {str(t.number) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for run in client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"):
        if run.data.tags.get("trial") not in live:
            client.set_tag(run.info.run_id, "outcome", "failed")
            client.set_tag(run.info.run_id, "error", "its worker process died")
            client.set_terminated(run.info.run_id, "KILLED")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- one worker -------------------------------------------------------------------------------


def claim_trial(study: optuna.Study, phase: str | None = None) -> optuna.Trial | None:
    """Claim one WAITING trial atomically through the storage (as Study.ask does, but never
    creating a trial beyond the planned ones). Scan trials first: refine trials need them."""
    storage = study._storage
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    waiting = [t for t in waiting if phase is None or t.user_attrs.get("phase") == phase]
    for t in sorted(waiting, key=lambda t: (t.user_attrs.get("phase") != "scan", t.number)):
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, t._trial_id)
        except RuntimeError:  # another worker claimed it first
            continue
    return None


def stable_range(trials: list[optuna.trial.FrozenTrial]) -> tuple[float, float] | None:
    """The learning rates the scan saw learn (converged, validation log loss below that of
    predicting the base rate) below the smallest that diverged; if none learned, the converged ones."""
    scan = [t for t in trials if t.user_attrs.get("phase") == "scan" and "lr" in t.params]
    diverged = [t.params["lr"] for t in scan if t.user_attrs.get("outcome") == "diverged"]
    limit = min(diverged) if diverged else math.inf
    converged = [t for t in scan if t.user_attrs.get("outcome") == "converged" and t.params["lr"] < limit]
    learned = [t for t in converged if (t.user_attrs.get("val_loss") or math.inf) < t.user_attrs.get("val_loss_prior", 0)]
    ok = sorted(t.params["lr"] for t in (learned or converged))
    if not ok:
        return None
    return (ok[0], ok[-1]) if ok[0] < ok[-1] else (ok[0] / 2, ok[0])


def _wait_for_scan(cfg: DictConfig, study: optuna.Study, parent_run_id: str, planned: int, log,
                   poll_s: float = 0.1, check_s: float = 2.0) -> list[optuna.trial.FrozenTrial]:
    """Block a refine trial until the scan is complete (read every `poll_s`). Meanwhile run any
    scan trial that is waiting (a retry of one whose worker died), so that workers never all
    wait on each other; dead workers are looked for every `check_s`."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    last_check = -math.inf  # look for dead workers at once on the first wait
    while True:
        trials = effective_trials(study)
        open_scan = [t for t in trials if t.user_attrs.get("phase") == "scan"
                     and t.state in (TrialState.WAITING, TrialState.RUNNING)]
        if not open_scan:
            return trials
        other = claim_trial(study, phase="scan")
        if other is not None:
            run_trial(cfg, study, other, parent_run_id, planned, log)
            continue
        if time.monotonic() - last_check >= check_s:
            if is_heartbeat_enabled(study._storage):
                optuna.storages.fail_stale_trials(study)
            if _COORDINATOR:  # one process re-enqueues dead local trials, so no retry is doubled
                recover_dead_trials(study, cfg.tracking.uri, None)
            last_check = time.monotonic()
        time.sleep(poll_s)


def run_trial(cfg: DictConfig, study: optuna.Study, trial: optuna.Trial, parent_run_id: str,
              planned: int, log=print) -> None:
    """Train one trial and tell the study. Never raises for a failed trial (Ctrl-C does)."""
    from dropout_risk.pruning import PruneOnValLoss
    from dropout_risk.train import train

    s = cfg.sweep
    phase = trial.user_attrs.get("phase", "scan")
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    tcfg = copy.deepcopy(cfg)
    OmegaConf.set_struct(tcfg, False)
    if phase == "refine":
        rng = stable_range(_wait_for_scan(cfg, study, parent_run_id, planned, log))
        if rng is None:
            trial.set_user_attr("outcome", "failed")
            trial.set_user_attr("error", "the scan found no stable learning rate to refine in")
            study.tell(trial, state=TrialState.FAIL)
            log(f"[trial {trial.number + 1}/{planned} refine] skipped: no stable learning rate in the scan")
            return
        lr = trial.suggest_float("lr", rng[0], rng[1], log=True)
        for key, (low, high) in search_space(cfg).items():
            value = trial.suggest_float(key, low, high, log=True)
            OmegaConf.update(tcfg, key, round(value) if isinstance(OmegaConf.select(cfg, key), int) else value)
    else:
        lo, hi = lr_range(cfg)
        lr = trial.suggest_float("lr", lo, hi, log=True)
    tcfg.optim.lr = lr
    tcfg.tracking.run_name = f"{phase}-{trial.number:03d}-lr{lr:.3g}"
    trial_overrides = [*study.user_attrs.get("overrides", []), f"optim.lr={lr}",
                       *(f"{k}={OmegaConf.select(tcfg, k)}" for k in search_space(cfg))]
    OmegaConf.set_struct(tcfg, True)
    callbacks = [PruneOnValLoss(trial)] if phase == "refine" and s.pruner.name != "none" else []
    tags = {"sweep_id": parent_run_id, "trial": str(trial.number), "phase": phase, "study": study.study_name}
    t0 = time.perf_counter()
    try:
        result = train(tcfg, parent_run_id=parent_run_id, tags=tags, callbacks=callbacks, overrides=trial_overrides)
    except KeyboardInterrupt:
        trial.set_user_attr("outcome", "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:  # noqa: BLE001 - a failed trial never stops the sweep
        trial.set_user_attr("outcome", "failed")
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
        study.tell(trial, state=TrialState.FAIL)
        log(f"[trial {trial.number + 1}/{planned} {phase}] lr={lr:.4g} failed: {type(exc).__name__}: {exc}")
        return
    m = result.metrics
    attrs = {"outcome": result.outcome, "run_id": result.run_id, "duration_s": round(time.perf_counter() - t0, 3),
             "diverged_at_step": result.diverged_at_step,
             "train_loss": _finite_or_none(m.get("train/loss_epoch", _last_finite(result.train_loss))),
             "val_loss": _finite_or_none(m.get("val/log_loss")), "auroc": _finite_or_none(m.get("val/auroc")),
             "ece": _finite_or_none(m.get("val/ece")), "brier": _finite_or_none(m.get("val/brier")),
             "val_loss_prior": _finite_or_none(m.get("val/log_loss_prior"))}
    if result.train_loss:
        epochs = max(1, len(result.val_history))
        per_epoch = max(1, len(result.train_loss) // epochs)
        attrs["train_loss"] = _finite_or_none(float(np.mean(result.train_loss[-per_epoch:])))
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if result.outcome == "converged" and attrs["val_loss"] is not None:
        study.tell(trial, attrs["val_loss"])
    elif result.outcome == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)
    detail = (f"diverged at step {result.diverged_at_step}" if result.outcome == "diverged"
              else f"{result.outcome}  val log loss {_fmt(attrs['val_loss'])}  AUROC {_fmt(attrs['auroc'])}  "
                   f"ECE {_fmt(attrs['ece'])}")
    log(f"[trial {trial.number + 1}/{planned} {phase}] lr={lr:.4g}  {detail}  ({attrs['duration_s']:.1f} s)")


def _finite_or_none(v) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _last_finite(values: list[float]) -> float | None:
    return next((v for v in reversed(values) if math.isfinite(v)), None)


def _fmt(v) -> str:
    return "nan" if v is None else f"{v:.4f}"


def work(cfg: DictConfig, study: optuna.Study, parent_run_id: str, log=print) -> int:
    """Take trials until none is waiting. Returns how many this worker ran."""
    planned = int(study.user_attrs.get("planned", 0))
    heartbeat = _heartbeat_support(study)
    n = 0
    while True:
        trial = claim_trial(study)
        if trial is None:
            return n
        with heartbeat(trial):
            run_trial(cfg, study, trial, parent_run_id, planned, log)
        n += 1


def _heartbeat_support(study: optuna.Study):
    """Optuna's heartbeat thread for RDB storages (so a dead worker's trial is failed and
    retried by the others); a no-op elsewhere."""
    from contextlib import contextmanager, nullcontext

    from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled

    if not is_heartbeat_enabled(study._storage):
        return lambda trial: nullcontext()

    @contextmanager
    def beat(trial):
        thread = get_heartbeat_thread(trial._trial_id, study._storage)
        thread.start()
        try:
            yield
        finally:
            thread.join()

    return beat


def worker_process(cfg_container: dict, study_name: str | None, n_threads: int, wait_s: float = 300.0) -> None:
    """Entry point of a spawned worker process (sweep_workers.start_local_workers). It is started
    before the coordinator has created the study, so its imports overlap the coordinator's; it
    waits for the study (`study_name`, None: the default name) and its parent run, then takes
    trials until none is waiting."""
    import gc
    import signal

    import torch

    import dropout_risk.train  # noqa: F401  (every import a trial needs, done while the study is made)
    from dropout_risk.config import register_configs

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
                study = optuna.load_study(study_name=study_name, storage=storage, sampler=_sampler(cfg, os.getpid()),
                                          pruner=_pruner(cfg))
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


def _sampler(cfg: DictConfig, salt: int = 0) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=cfg.seed + salt, n_startup_trials=min(4, max(1, cfg.sweep.n_refine // 2)))


def _pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    p = cfg.sweep.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    return optuna.pruners.NopPruner()


# --- the report ---------------------------------------------------------------------------------


@dataclass
class SweepResult:
    study: str
    parent_run_id: str
    experiment_id: str
    summary: pd.DataFrame
    sharpness: float | None
    gd_threshold: float | None
    boundary: tuple[float | None, float | None]
    best_trial: int | None


def summary_frame(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in effective_trials(study):
        ua = t.user_attrs
        outcome = ua.get("outcome") or {TrialState.PRUNED: "pruned", TrialState.COMPLETE: "converged"}.get(
            t.state, "failed" if t.state == TrialState.FAIL else t.state.name.lower())
        rows.append({"trial": t.number, "phase": ua.get("phase", "scan"),
                     "lr": t.params.get("lr", ua.get("lr_planned")), "outcome": outcome,
                     "diverged_at_step": ua.get("diverged_at_step"), "train_loss": ua.get("train_loss"),
                     "val_loss": ua.get("val_loss"), "auroc": ua.get("auroc"), "ece": ua.get("ece"),
                     "brier": ua.get("brier"), "duration_s": ua.get("duration_s"), "run_id": ua.get("run_id")})
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for col in ("lr", "diverged_at_step", "train_loss", "val_loss", "auroc", "ece", "brier", "duration_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def sharpness_at_init(cfg: DictConfig) -> float:
    """λ_max of the training-loss Hessian at the initial weights every trial starts from."""
    import torch

    from dropout_risk.data.loaders import load_data
    from dropout_risk.data.module import StudentDataModule
    from dropout_risk.divergence import sharpness
    from dropout_risk.model import MLP, loss_function

    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    torch.manual_seed(cfg.seed)  # the same initialisation train() uses
    net = MLP(dm.n_features, list(cfg.model.hidden), cfg.model.activation)
    x, y = dm.tensors["train"]
    return sharpness(net, loss_function(cfg.loss.name), x, y, iters=cfg.sweep.sharpness_iters, seed=cfg.seed)


def report(cfg: DictConfig, study: optuna.Study, run: Run) -> SweepResult:
    """Divergence chart, reliability grid, summary CSV and boundary metrics on the parent run."""
    from dropout_risk import plots
    from dropout_risk.divergence import gd_threshold, observed_boundary

    frame = summary_frame(study)
    lam = study.user_attrs.get("sharpness_init")
    threshold = gd_threshold(lam) if lam is not None else None
    scan = frame[frame.phase == "scan"]
    boundary = observed_boundary(frame)
    optim = str(cfg.optim._target_).rsplit(".", 1)[-1]

    fig = plots.divergence_chart(frame[frame.lr.notna()], threshold, optim, boundary)
    run.log_image(fig, key="divergence", step=0, also_as="plots/divergence.png")
    plots.close(fig)
    diagrams = _scan_diagrams(run, scan)
    if diagrams:  # the trials' own final diagrams side by side: nothing is drawn twice
        run.log_written("plots/reliability_grid.png", lambda path: plots.save_tiled_png(diagrams, 6, path))
    run.log_text(frame.to_csv(index=False), "sweep_summary.csv")

    completed = [t for t in effective_trials(study) if t.state == TrialState.COMPLETE]
    best = min(completed, key=lambda t: t.value) if completed else None
    metrics = {"n_trials": len(frame), **{f"n_{o}": int((frame.outcome == o).sum())
                                          for o in ("converged", "diverged", "pruned", "failed")}}
    if lam is not None:
        metrics.update(sharpness_init=lam, gd_threshold=threshold)
    if boundary[0] is not None:
        metrics["boundary/largest_converged_lr"] = boundary[0]
    if boundary[1] is not None:
        metrics["boundary/smallest_diverged_lr"] = boundary[1]
        if threshold and math.isfinite(threshold):
            metrics["boundary/diverged_lr_over_gd_threshold"] = boundary[1] / threshold
    if best is not None:
        metrics.update(best_val_log_loss=best.value, best_lr=best.params["lr"])
        run.set_tags({"best_trial": str(best.number), "best_run_id": best.user_attrs.get("run_id", "")})
        if best.user_attrs.get("run_id"):
            run.client.set_tag(best.user_attrs["run_id"], "best", "true")
    run.log_metrics(metrics, flush=True)
    return SweepResult(study.study_name, run.run_id, run.experiment_id, frame, lam, threshold, boundary,
                       best.number if best else None)


def _scan_diagrams(run: Run, scan: pd.DataFrame) -> list:
    """Each scan trial's final reliability diagram, opened lazily (PIL), in lr order: the trial's
    own plots/reliability_val.png, which train() titles with the lr, the outcome and the ECE. A
    trial without one (it failed before drawing it) is left out."""
    import io

    from PIL import Image

    from dropout_risk.tracking import artifact_bytes, runs_by_ids

    ids = [r for r in scan.sort_values("lr").run_id if isinstance(r, str)]
    found = runs_by_ids(run.client, [run.experiment_id], ids)
    diagrams = []
    for run_id in ids:
        if run_id not in found:
            continue
        raw = artifact_bytes(found[run_id].info.artifact_uri, "plots/reliability_val.png", run.client.tracking_uri)
        if raw is not None:
            diagrams.append(Image.open(io.BytesIO(raw)))
    return diagrams


# --- the whole sweep ----------------------------------------------------------------------------


def run_sweep(cfg: DictConfig, overrides: list[str] | None = None, log=print,
              workers: list | None = None, on_imported: Callable[[], None] | None = None) -> SweepResult | None:
    """Create or resume the study, run the trials (in `sweep.n_workers` processes), report.
    role=worker joins an existing study and only works; role=report only reports. `workers`:
    local worker processes already started (pipelines/sweep.py starts them as soon as the
    command line composed); None: started here. `on_imported`: called once torch and Lightning
    are imported, which the coordinator does only after creating the study and its parent run
    (the command line freezes the garbage collector's view of the imports there)."""
    from dropout_risk.tracking import check_tracking

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
    study, created = open_study(cfg, create=s.role in ("auto", "coordinator"))
    parent_id = study.user_attrs.get("parent_run_id")
    if s.role == "worker":
        if not parent_id:
            raise SweepError(f"sweep.study={study.study_name!r} has no parent run yet; start the coordinator first")
        n = work(cfg, study, parent_id, log)
        log(f"worker done: ran {n} trial(s) of study {study.study_name}")
        return None

    if created:  # before the parent run: workers start as soon as it exists
        study.set_user_attr("overrides", list(overrides))  # what each trial logs as its overrides
    run = _parent_run(cfg, study, parent_id, overrides)
    global _COORDINATOR
    _COORDINATOR = s.role in ("auto", "coordinator")
    try:
        # Only now torch and Lightning (seconds of imports): local workers already train meanwhile.
        import torch

        import dropout_risk.train  # noqa: F401

        if on_imported is not None:
            on_imported()
        if s.role in ("auto", "coordinator"):
            torch.set_num_threads(n_threads)
            if "sharpness_init" not in study.user_attrs:
                t0 = time.perf_counter()
                lam = sharpness_at_init(cfg)
                study.set_user_attr("sharpness_init", lam)
                log(f"sharpness at init: lambda_max = {lam:.4g}, plain-GD threshold 2/lambda_max = "
                    f"{2 / lam if lam > 0 else math.inf:.4g} ({time.perf_counter() - t0:.1f} s)")
            recovered = recover_dead_trials(study, cfg.tracking.uri, run.run_id)
            if recovered:
                log(f"resuming: {recovered} interrupted trial(s) re-enqueued")
            done = sum(t.state.is_finished() for t in effective_trials(study))
            planned = int(study.user_attrs["planned"])
            log(f"study {study.study_name}: {done}/{planned} trials done"
                + (" (new)" if created else " (resuming)") + f", {s.n_workers} worker(s)")
            wcfg = copy.deepcopy(cfg)
            wcfg.trainer.num_threads = n_threads
            _wait_until_finished(wcfg, study, run.run_id, log)
        result = report(cfg, study, run)
        run.end("FINISHED")
        return result
    except (KeyboardInterrupt, SystemExit):
        run.set_tags({"interrupted": "true"})
        run.end("KILLED")
        raise
    except BaseException as exc:
        run.set_tags({"error": f"{type(exc).__name__}: {exc}"[:5000]})
        run.end("FAILED")
        raise


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
    from mlflow import MlflowClient

    from dropout_risk.tracking import provenance_tags

    if parent_id:
        client = MlflowClient(tracking_uri=resolve_uri(cfg.tracking.uri))
        client.update_run(parent_id, status="RUNNING")
        return Run(client, parent_id)
    optim = str(cfg.optim._target_).rsplit(".", 1)[-1].lower()
    lo, hi = lr_range(cfg)
    run = Run.start(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location,
                    f"sweep-{optim}-lr{lo:.0e}-{hi:.0e}-s{cfg.seed}",
                    tags={"study": study.study_name, "sweep_kind": "lr_divergence", "seed": str(cfg.seed),
                          "mlflow.experimentKind": "custom_model_development", **provenance_tags()})
    run.set_tags({"sweep_id": run.run_id})
    study.set_user_attr("parent_run_id", run.run_id)
    from dropout_risk.config import saved_config_yaml

    run.log_params(flatten(to_container(cfg)))
    run.log_text(saved_config_yaml(cfg), "config/config.yaml")
    run.log_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))), "config/overrides.yaml")
    return run
