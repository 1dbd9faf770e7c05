"""One trial: train it, record its outcome in Optuna; the loop that takes trials until none waits."""

from __future__ import annotations

import copy
import math
import os
import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from dropout_risk.console import fit
from dropout_risk.format import fmt
from dropout_risk.sweep.space import lr_range, search_space
from dropout_risk.sweep.study import (
    RETRYABLE,
    claim_trial,
    claim_trials,
    effective_trials,
    recover_dead_trials,
)
from dropout_risk.tracking.names import (
    CONVERGED,
    TAG_PHASE,
    TAG_STUDY,
    TAG_SWEEP_ID,
    TAG_TRIAL,
    TRAIN_LOSS_EPOCH,
    VAL_LOG_LOSS,
    outcome_run_name,
    trial_run_name,
)

_COORDINATOR = False  # set in the process that created/resumed the study (role=auto)


def act_as_coordinator(flag: bool) -> None:
    """Whether this process re-enqueues the trials of dead local workers while it waits."""
    global _COORDINATOR
    _COORDINATOR = flag


def stable_range(trials: list[optuna.trial.FrozenTrial]) -> tuple[float, float] | None:
    """The learning rates the scan saw learn (converged, validation log loss below that of
    predicting the base rate) below the smallest that diverged; if none learned, the converged ones."""
    scan = [t for t in trials if t.user_attrs.get("phase") == "scan" and "lr" in t.params]
    diverged = [t.params["lr"] for t in scan if t.user_attrs.get("outcome") == "diverged"]
    limit = min(diverged) if diverged else math.inf
    converged = [t for t in scan if t.user_attrs.get("outcome") in CONVERGED and t.params["lr"] < limit]
    learned = [t for t in converged if (t.user_attrs.get("val_loss") or math.inf) < t.user_attrs.get("val_loss_prior", 0)]
    ok = sorted(t.params["lr"] for t in (learned or converged))
    if not ok:
        return None
    return (ok[0], ok[-1]) if ok[0] < ok[-1] else (ok[0] / 2, ok[0])


def open_scan_trials(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Scan trials (of `effective_trials`) without a result yet: waiting, running, or failed by
    a dead worker and not yet re-enqueued (recover_dead_trials fails a trial first and enqueues its
    retry a moment later: a refine that looked in between saw a scan without its converged trials)."""
    return [t for t in trials if t.user_attrs.get("phase") == "scan"
            and (t.state in (TrialState.WAITING, TrialState.RUNNING)
                 or (t.state == TrialState.FAIL and t.user_attrs.get("outcome") in RETRYABLE))]


def _wait_for_scan(cfg: DictConfig, study: optuna.Study, parent_run_id: str, planned: int, log,
                   poll_s: float = 0.1, check_s: float = 2.0) -> list[optuna.trial.FrozenTrial]:
    """Block a refine trial until the scan is complete (read every `poll_s`). Meanwhile run any
    scan trial that is waiting (a retry of one whose worker died), so that workers never all
    wait on each other; dead workers are looked for every `check_s`."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    last_check = -math.inf  # look for dead workers at once on the first wait
    while True:
        trials = effective_trials(study)
        if not open_scan_trials(trials):
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
    from dropout_risk.sweep.pruning import PruneOnValLoss
    from dropout_risk.training.train import train

    prepared = _prepare(cfg, study, trial, parent_run_id, planned, log)
    if prepared is None:
        return
    callbacks = [PruneOnValLoss(trial)] if prepared.pruned_by_optuna else []
    t0 = time.perf_counter()
    try:
        result = train(prepared.cfg, parent_run_id=parent_run_id, tags=prepared.tags, callbacks=callbacks,
                       overrides=prepared.overrides)
    except KeyboardInterrupt:
        _interrupted(study, [trial])
        raise
    except Exception as exc:  # noqa: BLE001 - a failed trial never stops the sweep
        result = exc
    _record(study, trial, prepared, result, time.perf_counter() - t0, log)


def run_population(cfg: DictConfig, study: optuna.Study, trials: list[optuna.Trial], parent_run_id: str,
                   planned: int, log=print) -> None:
    """Train claimed trials as populations (one per group of trials whose configs differ only in lr
    and seed) and tell the study each one's outcome. Never raises for a failed trial (Ctrl-C does)."""
    from dropout_risk.training.train_population import MemberSpec, shared_config, train_population

    prepared = [(t, p) for t in trials if (p := _prepare(cfg, study, t, parent_run_id, planned, log)) is not None]
    groups: dict[str, list] = {}
    for trial, p in prepared:  # refine trials searching more than the lr may differ in other keys
        groups.setdefault(repr(shared_config(p.cfg)), []).append((trial, p))
    for group in groups.values():
        specs = [MemberSpec(p.cfg, p.tags, p.overrides, _pruner(trial) if p.pruned_by_optuna else None)
                 for trial, p in group]
        t0 = time.perf_counter()
        try:
            results = train_population(specs, parent_run_id=parent_run_id)
        except KeyboardInterrupt:
            _interrupted(study, [trial for trial, _ in group])
            raise
        except Exception as exc:  # noqa: BLE001 - a failed population never stops the sweep
            results = [exc] * len(group)
        duration = (time.perf_counter() - t0) / len(group)  # each member's share of the population's time
        for (trial, p), result in zip(group, results, strict=True):
            _record(study, trial, p, result, duration, log)


def _pruner(trial: optuna.Trial):
    """A population member's pruner: its validation log loss to its trial each epoch."""
    def prune(value: float, epoch: int) -> bool:
        trial.report(value, epoch)
        return trial.should_prune()
    return prune


@dataclass
class _Prepared:
    cfg: DictConfig
    phase: str
    lr: float
    seed: int | None
    tags: dict[str, str]
    overrides: list[str]
    pruned_by_optuna: bool


def _prepare(cfg: DictConfig, study: optuna.Study, trial: optuna.Trial, parent_run_id: str, planned: int,
             log) -> _Prepared | None:
    """The trial's own config (its lr, seed, searched keys), tags and overrides; None when a refine
    trial has no stable range to sample from (then it is told FAIL here)."""
    s = cfg.sweep
    phase = trial.user_attrs.get("phase", "scan")
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    tcfg = copy.deepcopy(cfg)
    OmegaConf.set_struct(tcfg, False)
    # The parent fits the baselines once per sweep and gives the best trial its intervals
    # (sweep/baselines.py): per trial they would cost more than a short trial's training.
    tcfg.baselines.models, tcfg.baselines.n_resamples = {}, 0
    if phase == "refine":
        rng = stable_range(_wait_for_scan(cfg, study, parent_run_id, planned, log))
        if rng is None:
            trial.set_user_attr("outcome", "failed")
            trial.set_user_attr("error", "the scan found no stable learning rate to refine in")
            study.tell(trial, state=TrialState.FAIL)
            log(f"[trial {trial.number} refine] skipped: no stable learning rate in the scan")
            return None
        lr = trial.suggest_float("lr", rng[0], rng[1], log=True)
        for key, (low, high) in search_space(cfg).items():
            value = trial.suggest_float(key, low, high, log=True)
            OmegaConf.update(tcfg, key, round(value) if isinstance(OmegaConf.select(cfg, key), int) else value)
    else:
        lo, hi = lr_range(cfg)
        lr = trial.suggest_float("lr", lo, hi, log=True)
    seed = trial.user_attrs.get("seed")
    tcfg.optim.lr = lr
    if seed is not None and int(seed) != cfg.seed:  # seed cfg.seed: the config of a plain run
        tcfg.trainer.seed = int(seed)
    named_seed = int(seed) if seed is not None and s.seeds > 1 else None
    tcfg.tracking.run_name = trial_run_name(phase, trial.number, lr, named_seed, planned)
    overrides = [*study.user_attrs.get("overrides", []), f"optim.lr={lr}",
                 *([f"trainer.seed={tcfg.trainer.seed}"] if tcfg.trainer.seed is not None else []),
                 *(f"{k}={OmegaConf.select(tcfg, k)}" for k in search_space(cfg))]
    OmegaConf.set_struct(tcfg, True)
    tags = {TAG_SWEEP_ID: parent_run_id, TAG_TRIAL: str(trial.number), TAG_PHASE: phase, TAG_STUDY: study.study_name}
    return _Prepared(tcfg, phase, lr, named_seed, tags, overrides, phase == "refine" and s.pruner.name != "none")


def _interrupted(study: optuna.Study, trials: list[optuna.Trial]) -> None:
    for trial in trials:
        trial.set_user_attr("outcome", "interrupted")
        study.tell(trial, state=TrialState.FAIL)


def _record(study: optuna.Study, trial: optuna.Trial, p: _Prepared, result, duration_s: float, log) -> None:
    """Tell the study how the trial went (`result`: a RunResult or the exception that failed it)."""
    what = trial_line_head(trial.number, p.phase, p.lr, p.seed)
    if isinstance(result, BaseException):
        trial.set_user_attr("outcome", "failed")
        trial.set_user_attr("error", f"{type(result).__name__}: {result}"[:1000])
        study.tell(trial, state=TrialState.FAIL)
        log(fit(f"{what} failed: {type(result).__name__}: {result}"))
        return
    _name_outcome(p.cfg, result)
    m = result.metrics
    attrs = {"outcome": result.outcome, "run_id": result.run_id, "duration_s": round(duration_s, 3),
             "diverged_at_step": result.diverged_at_step, "catapult_step": result.catapult_step,
             "train_loss": _finite_or_none(m.get(TRAIN_LOSS_EPOCH, _last_finite(result.train_loss))),
             "val_loss": _finite_or_none(m.get(VAL_LOG_LOSS)), "auroc": _finite_or_none(m.get("val/auroc")),
             "ece": _finite_or_none(m.get("val/ece")), "brier": _finite_or_none(m.get("val/brier")),
             "val_loss_prior": _finite_or_none(m.get("val/log_loss_prior"))}
    if result.train_loss:
        epochs = max(1, len(result.val_history))
        per_epoch = max(1, len(result.train_loss) // epochs)
        attrs["train_loss"] = _finite_or_none(float(np.mean(result.train_loss[-per_epoch:])))
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if result.outcome in CONVERGED and attrs["val_loss"] is not None:
        study.tell(trial, attrs["val_loss"])
    elif result.outcome == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)
    detail = (f"diverged at step {result.diverged_at_step}" if result.outcome == "diverged"
              else f"{result.outcome} val_loss={fmt(attrs['val_loss'])} auroc={fmt(attrs['auroc'])} "
                   f"ece={fmt(attrs['ece'])}")
    log(fit(f"{what} {detail} ({attrs['duration_s']:.1f} s)"))


def trial_line_head(number: int, phase: str, lr: float, seed: int | None) -> str:
    """The start of a trial's live line: `[trial 26 refine] lr=0.0007713 seed=0`. The number is
    Optuna's trial number, from 0, as in the summary table, the run name and the `trial` tag; the
    metrics that follow carry the summary table's column names (val_loss, auroc, ece)."""
    return f"[trial {number} {phase}] lr={lr:.4g}" + (f" seed={seed}" if seed is not None else "")


def _name_outcome(cfg: DictConfig, result) -> None:
    """The outcome at the end of a trial's run name unless it converged (one request), so the runs
    table shows it at a glance: the run was named when it started, before its outcome was known."""
    name = outcome_run_name(result.run_name, result.outcome)
    if name != result.run_name:
        from dropout_risk.tracking.store import client

        client(cfg.tracking.uri).update_run(result.run_id, name=name)
        result.run_name = name


def _finite_or_none(v) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _last_finite(values: list[float]) -> float | None:
    return next((v for v in reversed(values) if math.isfinite(v)), None)


def work(cfg: DictConfig, study: optuna.Study, parent_run_id: str, log=print) -> int:
    """Take trials until none is waiting. Returns how many this worker ran."""
    planned = int(study.user_attrs.get("planned", 0))
    heartbeat = _heartbeat_support(study)
    n = 0
    while True:
        if not cfg.sweep.population:
            trial = claim_trial(study)
            if trial is None:
                return n
            with heartbeat(trial):
                run_trial(cfg, study, trial, parent_run_id, planned, log)
            n += 1
            continue
        trials = claim_trials(study, lambda phase: population_size(cfg, phase))
        if not trials:
            return n
        with ExitStack() as beats:
            for trial in trials:
                beats.enter_context(heartbeat(trial))
            run_population(cfg, study, trials, parent_run_id, planned, log)
        n += len(trials)


def population_size(cfg: DictConfig, phase: str | None = "scan") -> int:
    """sweep.population_size, else the phase's planned trials split over the workers (so both
    workers train refine trials too: 8 as 4 + 4 takes half the wall time of one population of 8)."""
    s = cfg.sweep
    if s.population_size is not None:
        return int(s.population_size)
    planned = s.n_refine if phase == "refine" else (len(s.lr_over_gd_threshold) or s.n_scan) * s.seeds
    return max(1, math.ceil(planned / max(s.n_workers, 1)))


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
