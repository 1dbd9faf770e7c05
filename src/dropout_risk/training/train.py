"""train(cfg) -> RunResult: the one function every entry point calls.

config check -> data -> DataModule -> MLflow run -> Trainer.fit (divergence guard, per-step
loss, per-epoch validation) -> final val/test metrics -> reliability diagrams -> weights.
"""

from __future__ import annotations

import logging
import signal
import textwrap
import time
import warnings
from collections.abc import Callable

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig

from dropout_risk.analysis import mechanism
from dropout_risk.config.saved import to_container
from dropout_risk.config.validate import validate
from dropout_risk.data.loaders import load_data
from dropout_risk.data.module import StudentDataModule
from dropout_risk.model.baselines import Baseline, check_baselines, fit_baselines
from dropout_risk.model.module import DropoutRiskModule
from dropout_risk.model.optim import optimizer_factory
from dropout_risk.tracking.names import RELIABILITY_IMAGE_KEY, TAG_OUTCOME, run_name
from dropout_risk.tracking.provenance import data_provenance_tags, device_tags, provenance_tags
from dropout_risk.tracking.run import Run
from dropout_risk.tracking.store import check_tracking
from dropout_risk.training.artifacts import page_student
from dropout_risk.training.best import BestEpoch, early_stopping
from dropout_risk.training.diagrams import EpochDiagrams, pool_worth_it
from dropout_risk.training.guard import DivergenceGuard
from dropout_risk.training.progress import progress_callbacks, progress_mode, report_plan
from dropout_risk.training.recorder import StepLossRecorder
from dropout_risk.training.report import Fitted, RunResult, report_model
from dropout_risk.training.stability import SharpnessMonitor, eval_batch
from dropout_risk.training.validation import EpochValidation


def train_seed(cfg: DictConfig) -> int:
    """The seed of initialisation and data order: trainer.seed, else the top-level seed."""
    return cfg.seed if cfg.trainer.get("seed") is None else int(cfg.trainer.seed)


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # Lightning 2.6 on torch 2.13
    warnings.filterwarnings("ignore", message=".*no `validation_step`. Skipping val loop.*")  # EpochValidation validates


def prepare(cfg: DictConfig, *, shuffle_seed: int | None = None,
            check: Callable[[StudentDataModule], None] | None = None,
            ) -> tuple[StudentDataModule, list[Baseline], dict[str, str]]:
    """What a model's training needs before its MLflow run exists, each part checked so that bad
    input fails here: the tracking store, the data and its split, `check(dm)` (e.g. a population's
    memory), the lab page's student, the fitted baselines; and the run's tags from them."""
    check_tracking(cfg.tracking.uri)
    _quiet_lightning()
    if cfg.trainer.num_threads > 0:
        torch.set_num_threads(cfg.trainer.num_threads)
    data = load_data(cfg.data, cfg.seed)
    dm = StudentDataModule(data, cfg.data, cfg.seed, shuffle_seed=shuffle_seed)
    if check is not None:
        check(dm)
    if cfg.mechanism.page:
        page_student(cfg, dm)  # a bad row number fails here, before any run exists
    check_baselines(cfg)
    baselines = fit_baselines(cfg, dm.tensors, cfg.seed)  # one that cannot be fitted fails here too
    tags = {"seed": str(cfg.seed), "data": data.name, **data_provenance_tags(dm.fingerprint()), **device_tags(cfg),
            **provenance_tags(), **{k: str(v) for k, v in cfg.tags.items()}}
    return dm, baselines, tags


def train(
    cfg: DictConfig,
    *,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    callbacks: list[pl.Callback] | None = None,
    overrides: list[str] | None = None,
) -> RunResult:
    """Train one model as `cfg` says and track it as one MLflow run (nested under
    `parent_run_id` for sweep trials). Bad config or data raises ConfigError/DataError
    before any run is created; anything raised later ends the run FAILED (Ctrl-C: KILLED)."""
    validate(cfg)
    dm, baselines, base_tags = prepare(cfg, shuffle_seed=train_seed(cfg))
    name = run_name(cfg)
    resolved = to_container(cfg)
    run_tags = {**base_tags, **(tags or {})}
    run = Run.start(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location, name,
                    tags=run_tags, parent_run_id=parent_run_id)
    with run.failing_on_error({TAG_OUTCOME: "failed"}):
        return _train_in_run(cfg, run, dm, name, resolved, overrides or [], callbacks or [], baselines)


def _train_in_run(cfg, run: Run, dm: StudentDataModule, name: str, resolved: dict,
                  overrides: list[str], callbacks: list[pl.Callback], baselines: list[Baseline]) -> RunResult:
    run.log_config(cfg, overrides)

    torch.manual_seed(train_seed(cfg))  # initialisation
    module = DropoutRiskModule(
        n_features=dm.n_features,
        hidden=list(cfg.model.hidden),
        activation=cfg.model.activation,
        loss=cfg.loss.name,
        optimizer=optimizer_factory(cfg.optim),
        zero_grad=cfg.optim.zero_grad,
        grad_norm=cfg.mechanism.grad_norm,
        mechanism_every=cfg.mechanism.every_n_steps,
    )
    # The backprop-flow figure compares the network before the first step with the trained one.
    first_flow = (mechanism.flow_profile(mechanism.trace(module.net, module.loss_fn, *dm.tensors["train"]))
                  if cfg.mechanism.figure else None)
    st = cfg.stability
    monitor = (SharpnessMonitor(*eval_batch(*dm.tensors["train"], st.eval_rows), st.every_n_steps, st.iters,
                                st.iters_per_estimate, float(cfg.optim.lr)) if st.every_n_steps else None)
    guard = DivergenceGuard(cfg.guard.factor)
    recorder = StepLossRecorder(run, every_n_steps=cfg.tracking.step_metrics_every_n_steps)
    best = BestEpoch()
    stopping = cfg.trainer.early_stopping
    stopper = [early_stopping(stopping.patience, stopping.min_delta)] if stopping.enabled else []
    mode = progress_mode(cfg.trainer.progress)
    shown, bar = progress_callbacks(mode, recorder, cfg.trainer.max_epochs)
    every = cfg.tracking.reliability_every_n_epochs
    # per-epoch diagrams drawn beside training by another process (training/diagrams.py says when)
    diagrams = (EpochDiagrams(dm.tensors["val"][1].numpy().astype(np.int64), every, RELIABILITY_IMAGE_KEY, name)
                if cfg.tracking.figures and pool_worth_it(cfg.trainer.max_epochs // every) else None)
    trainer = pl.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        deterministic=cfg.trainer.deterministic,
        # validation first: the others read its result in the same hook
        callbacks=[EpochValidation(*dm.tensors["val"]), *([diagrams] if diagrams else []),
                   *([monitor] if monitor else []), *([guard] if cfg.guard.enabled else []), recorder,
                   *shown, *callbacks, best, *stopper],
        limit_val_batches=0,  # EpochValidation validates (training/validation.py says why)
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bar,
        num_sanity_val_steps=0,
    )
    sigint = signal.getsignal(signal.SIGINT)
    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm)
    except BaseException:
        if diagrams is not None:
            diagrams.close()
        raise
    finally:
        fit_s = time.perf_counter() - t0
        run.flush()
        if signal.getsignal(signal.SIGINT) is not sigint and sigint is not None:
            signal.signal(signal.SIGINT, sigint)  # Lightning ignores Ctrl-C after catching one
    if trainer.interrupted:
        if diagrams is not None:
            diagrams.close()
        raise KeyboardInterrupt
    diverged = cfg.guard.enabled and guard.diverged
    # A callback that stopped training for its own reason (a sweep's pruner) names the outcome.
    stopped_by = next((cb.outcome for cb in callbacks if getattr(cb, "outcome", None)), None)
    fitted = Fitted(module=module, outcome="diverged" if diverged else (stopped_by or "converged"),
                    diverged_at_step=guard.diverged_at_step if diverged else None, reason=guard.reason,
                    best_epoch=best.best_epoch, best_state=best.state, fit_s=fit_s,
                    train_loss=recorder.losses, grad_norms=recorder.grad_norms,
                    stability=monitor.series if monitor else None, diagrams=diagrams)
    if mode != "none":
        print(textwrap.fill(report_plan(cfg, len(module.val_history), diverged), 100, subsequent_indent="  "),
              flush=True)
    try:
        return report_model(cfg, run, dm, name, resolved, fitted, baselines, first_flow)
    finally:
        if diagrams is not None:
            diagrams.close()  # after a failure in the report: no drawing process left behind
