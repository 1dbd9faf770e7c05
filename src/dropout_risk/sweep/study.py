"""The study's bookkeeping: open or resume, effective trials, dead workers, claiming, retries."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from dropout_risk.errors import SweepError
from dropout_risk.sweep.retry import enqueue_retry
from dropout_risk.sweep.space import default_study_name, scan_lrs, trial_space
from dropout_risk.sweep.storage import make_storage, redact
from dropout_risk.tracking.names import TAG_ERROR, TAG_OUTCOME, TAG_TRIAL
from dropout_risk.tracking.process import start_ticks
from dropout_risk.tracking.store import client

RETRYABLE = ("interrupted", "worker_died")


def open_study(cfg: DictConfig, create: bool, lam0: float | None = None) -> tuple[optuna.Study, bool]:
    """Create the study (enqueue every planned trial once) or load it and check that it is the
    same sweep. Returns (study, created). `lam0`: lambda_max at initialisation, when measured
    before (sweep.lr_over_gd_threshold scans multiples of 2/lam0)."""
    s = cfg.sweep
    storage = make_storage(s.storage, s.heartbeat_s)
    name = s.study or default_study_name(cfg)
    sampler, pruner = make_sampler(cfg), make_pruner(cfg)
    space = trial_space(cfg)
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        if not create:
            raise SweepError(f"sweep.study={name!r} does not exist in {redact(str(s.storage or 'the journal file'))}; "
                             "start the sweep first without sweep.role=worker") from None
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                    direction="minimize", load_if_exists=True)
        if "space" not in study.user_attrs:
            lrs = scan_lrs(cfg, lam0)
            study.set_user_attr("space", space)
            study.set_user_attr("planned", len(lrs) * s.seeds + s.n_refine)
            study.set_user_attr("created", time.time())
            if lam0 is not None:
                study.set_user_attr("sharpness_init", lam0)
            for lr in lrs:
                for j in range(s.seeds):  # seed cfg.seed + j: initialisation and data order
                    study.enqueue_trial({"lr": lr}, user_attrs={"phase": "scan", "lr_planned": lr, "seed": cfg.seed + j})
            for _ in range(s.n_refine):
                study.enqueue_trial({}, user_attrs={"phase": "refine", "seed": cfg.seed})
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
            enqueue_retry(study, t)
            n += 1
    if parent_run_id:
        close_orphan_runs(study, uri, parent_run_id)
    return n


def close_orphan_runs(study: optuna.Study, uri: str, parent_run_id: str) -> None:
    """Child runs still RUNNING whose trial is no longer running (its process died): KILLED."""
    store = client(uri)
    parent = store.get_run(parent_run_id)
    live = {str(t.number) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for run in store.search_runs([parent.info.experiment_id],
                                 f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"):
        if run.data.tags.get(TAG_TRIAL) not in live:
            store.set_tag(run.info.run_id, TAG_OUTCOME, "failed")
            store.set_tag(run.info.run_id, TAG_ERROR, "its worker process died")
            store.set_terminated(run.info.run_id, "KILLED")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie answers signal 0 but is dead: an orphaned worker whose new parent (pid 1 in some
    # containers) never reaps it stays one, and its trial must still be recovered
    return not os.path.isdir("/proc/self") or start_ticks(pid) is not None


def claim_trials(study: optuna.Study, size: Callable[[str | None], int]) -> list[optuna.Trial]:
    """Claim up to `size(phase)` WAITING trials of one phase (scan first), for one population: every
    (waiting / n)-th first, so that each population spans the whole lr range. Populations of
    adjacent lrs would not: the one holding the large lrs sheds its diverged members after one
    epoch and finishes long before the other."""
    first = claim_trial(study)
    if first is None:
        return []
    trials = [first]
    phase = first.user_attrs.get("phase")
    n = size(phase)
    waiting = _waiting(study, phase)
    stride = max(1, (len(waiting) + len(trials)) // n)
    for t in waiting[stride - 1 :: stride] + [t for i, t in enumerate(waiting) if (i + 1) % stride]:
        if len(trials) >= n:
            break
        trial = _claim(study, t)
        if trial is not None:
            trials.append(trial)
    return trials


def claim_trial(study: optuna.Study, phase: str | None = None) -> optuna.Trial | None:
    """Claim one WAITING trial atomically through the storage (as Study.ask does, but never
    creating a trial beyond the planned ones). Scan trials first: refine trials need them."""
    for t in _waiting(study, phase):
        trial = _claim(study, t)
        if trial is not None:
            return trial
    return None


def _waiting(study: optuna.Study, phase: str | None) -> list[FrozenTrial]:
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    waiting = [t for t in waiting if phase is None or t.user_attrs.get("phase") == phase]
    return sorted(waiting, key=lambda t: (t.user_attrs.get("phase") != "scan", t.number))


def _claim(study: optuna.Study, t: FrozenTrial) -> optuna.Trial | None:
    try:
        if study._storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
            return optuna.Trial(study, t._trial_id)
    except RuntimeError:  # another worker claimed it first
        pass
    return None


def make_sampler(cfg: DictConfig, salt: int = 0) -> optuna.samplers.BaseSampler:
    # constant_liar: a population's refine trials are asked for together, before any has a value
    return optuna.samplers.TPESampler(seed=cfg.seed + salt, n_startup_trials=min(4, max(1, cfg.sweep.n_refine // 2)),
                                      constant_liar=True)


def make_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    p = cfg.sweep.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    return optuna.pruners.NopPruner()
