"""train_population(specs) -> one RunResult per member: K configs that differ only in optim.lr and
trainer.seed, trained in one fit (training/population.py), each tracked as its own MLflow run with
what train() logs for one model (training/report.py).

config check -> data (once) -> memory check -> one MLflow run per member -> Trainer.fit of the
population -> per member: its step losses and epoch metrics in bulk, then report_model.
"""

from __future__ import annotations

import copy
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from dropout_risk.analysis import mechanism
from dropout_risk.config.saved import to_container
from dropout_risk.config.validate import validate
from dropout_risk.data.module import StudentDataModule
from dropout_risk.errors import ConfigError
from dropout_risk.model.losses import loss_function
from dropout_risk.model.module import DropoutRiskModule
from dropout_risk.model.optim import optimizer_factory
from dropout_risk.tracking.names import TAG_OUTCOME, run_name
from dropout_risk.tracking.run import Run
from dropout_risk.training.memory import check_population_memory
from dropout_risk.training.population import Member, PopulationBatches, PopulationModule
from dropout_risk.training.recorder import epoch_metrics
from dropout_risk.training.report import Fitted, RunResult, report_model
from dropout_risk.training.stability import MemberSharpness, eval_batch
from dropout_risk.training.train import prepare, train_seed

# What members of one population may differ in; everything else is shared by the one fit.
MEMBER_KEYS = ("optim.lr", "trainer.seed", "tracking.run_name")
OUTCOMES = {"live": "converged", "stopped": "converged", "diverged": "diverged", "pruned": "pruned"}


@dataclass
class MemberSpec:
    cfg: DictConfig  # the member's whole config
    tags: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    prune: object = None  # callable (val log loss, epoch) -> bool: prune now (a sweep's pruner)


def shared_config(cfg: DictConfig) -> dict:
    """The config without the keys members may differ in."""
    out = to_container(cfg)
    for key in MEMBER_KEYS:
        section, _, leaf = key.partition(".")
        out.get(section, {}).pop(leaf, None)
    return out


def train_population(specs: list[MemberSpec], *, parent_run_id: str | None = None) -> list[RunResult | Exception]:
    """Train every member in one fit; one MLflow run each (nested under `parent_run_id`). Bad
    config, data or a population too large for memory raise before any run exists. A member whose
    report fails gets its exception in the list (its run FAILED); Ctrl-C ends every run KILLED."""
    cfg = specs[0].cfg
    validate(cfg)
    shared = shared_config(cfg)
    for spec in specs[1:]:
        validate(spec.cfg)
        if shared_config(spec.cfg) != shared:
            raise ConfigError("a population's members may differ only in " + ", ".join(MEMBER_KEYS)
                              + "; train the others in a population of their own")
    if cfg.mechanism.every_n_steps:
        raise ConfigError(f"mechanism.every_n_steps={cfg.mechanism.every_n_steps}: per-layer mechanism metrics are "
                          "not traced in a population; set mechanism.every_n_steps=0 or sweep.population=false")
    dm, baselines, base_tags = prepare(cfg, check=lambda dm: check_population_memory(
        len(specs), dm.n_features, list(cfg.model.hidden), cfg.data.batch_size, len(dm.tensors["train"][0]),
        cfg.optim._target_, cfg.trainer.accelerator, len(dm.tensors["val"][0]), cfg.trainer.max_epochs))
    common_tags = {**base_tags, "engine": "population", "population_size": str(len(specs))}
    runs: list[Run] = []
    # Ctrl-C or a crash, in the fit or between two members' reports: every run not yet ended ends
    # KILLED/FAILED (an ended run is left as it is)
    with ExitStack() as stack:
        for spec in specs:
            run = Run.start(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location,
                            run_name(spec.cfg), tags={**common_tags, "train_seed": str(train_seed(spec.cfg)),
                                                      **spec.tags}, parent_run_id=parent_run_id)
            runs.append(run)
            stack.enter_context(run.failing_on_error({TAG_OUTCOME: "failed"}))
        for run, spec in zip(runs, specs, strict=True):
            run.log_config(spec.cfg, spec.overrides)
        module, fit_s = _fit(cfg, dm, specs)
        # [steps, K], stacked once for all members
        series = [torch.stack(s) if s else None for s in (module.step_losses, module.grad_norms)]
        results: list[RunResult | Exception] = []
        for k, (run, spec) in enumerate(zip(runs, specs, strict=True)):
            try:
                with run.failing_on_error({TAG_OUTCOME: "failed"}):
                    results.append(_report_member(spec.cfg, run, dm, module, k, fit_s, baselines, *series))
            except Exception as exc:  # noqa: BLE001 - one member's failed report does not lose the others
                results.append(exc)
        return results


def _fit(cfg: DictConfig, dm: StudentDataModule, specs: list[MemberSpec]) -> tuple[PopulationModule, float]:
    members = [Member(lr=float(s.cfg.optim.lr), seed=train_seed(s.cfg), prune=s.prune) for s in specs]
    stopping = cfg.trainer.early_stopping
    module = PopulationModule(
        dm.n_features, list(cfg.model.hidden), cfg.model.activation, cfg.loss.name, optimizer_factory(cfg.optim),
        members, zero_grad=cfg.optim.zero_grad, guard_factor=cfg.guard.factor if cfg.guard.enabled else None,
        early_stopping=(stopping.patience, stopping.min_delta) if stopping.enabled else None,
        grad_norm=cfg.mechanism.grad_norm)
    module.val_tensors = dm.tensors["val"]
    st = cfg.stability
    if st.every_n_steps:
        module.stability = MemberSharpness(*eval_batch(*dm.tensors["train"], st.eval_rows), st.every_n_steps, st.iters,
                                           st.iters_per_estimate, [m.lr for m in members])
    # The backprop-flow figure compares each member before its first step with the trained one.
    module.first_flows = ([mechanism.flow_profile(mechanism.trace(module.net.member(k), loss_function(cfg.loss.name),
                                                                  *dm.tensors["train"])) for k in range(len(specs))]
                          if cfg.mechanism.figure else None)
    trainer = pl.Trainer(max_epochs=cfg.trainer.max_epochs, accelerator=cfg.trainer.accelerator,
                         devices=cfg.trainer.devices, deterministic=cfg.trainer.deterministic, logger=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False, limit_val_batches=0, num_sanity_val_steps=0)
    module.batches = PopulationBatches(*dm.tensors["train"], cfg.data.batch_size, [m.seed for m in members])
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=module.batches)
    if trainer.interrupted:
        raise KeyboardInterrupt
    return module, time.perf_counter() - t0


def _report_member(cfg: DictConfig, run: Run, dm: StudentDataModule, pop: PopulationModule, k: int,
                   fit_s: float, baselines, step_losses: torch.Tensor | None,
                   grad_norms: torch.Tensor | None) -> RunResult:
    m = pop.members[k]
    losses, grads = ([] if s is None else s[: m.steps, k].tolist() for s in (step_losses, grad_norms))
    _log_history(run, losses, grads, pop.epoch_ends, m.val_history, cfg.tracking.step_metrics_every_n_steps)
    module = DropoutRiskModule(dm.n_features, list(cfg.model.hidden), cfg.model.activation, cfg.loss.name,
                               pop.optimizer_factory)
    module.net.load_state_dict(pop.member_state_dict(k))
    module.val_history, module.val_probs, module.steps_taken = m.val_history, m.val_probs, m.steps
    fitted = Fitted(module=module, outcome=OUTCOMES[m.status], diverged_at_step=m.diverged_at_step,
                    reason=m.reason, best_epoch=m.best_epoch, best_state=m.best_state,
                    fit_s=fit_s / len(pop.members), train_loss=losses, grad_norms=grads,
                    extra_metrics={"population/size": float(len(pop.members)), "population/fit_s": fit_s},
                    stability=pop.stability.series[k] if pop.stability is not None else None)
    first_flow = pop.first_flows[k] if pop.first_flows else None
    return report_model(cfg, run, dm, run_name(cfg), to_container(cfg), fitted, baselines, first_flow)


def _log_history(run: Run, losses: list[float], grads: list[float], epoch_ends: list[int],
                 val_history: list[dict[str, float]], every: int = 1) -> None:
    """What StepLossRecorder logs for a plain run: train/loss (and train/grad_norm) per step (step
    1, every `every`-th and the last), and per epoch train/loss_epoch with the validation metrics;
    buffered, sent with the run's end."""
    run.log_metric_series("train/loss", losses, first_step=1, flush=False, every=every, last=True)
    if grads:
        run.log_metric_series("train/grad_norm", grads, first_step=1, flush=False, every=every, last=True)
    start = 0
    for epoch, end in enumerate(epoch_ends, start=1):
        chunk = losses[start:end]
        if not chunk:
            break
        run.log_metrics(epoch_metrics(chunk, val_history[epoch - 1] if len(val_history) >= epoch else None), step=epoch)
        start = end


def member_config(cfg: DictConfig, lr: float, seed: int | None = None, name: str | None = None) -> DictConfig:
    """`cfg` with a member's own lr, trainer.seed and run name."""
    out = copy.deepcopy(cfg)
    OmegaConf.set_struct(out, False)
    out.optim.lr = lr
    out.trainer.seed = seed
    if name is not None:
        out.tracking.run_name = name
    OmegaConf.set_struct(out, True)
    return out
