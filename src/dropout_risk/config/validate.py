"""Checks beyond the schema's types: value ranges and the pipeline a preset belongs to.
Each raises ConfigError naming the key and the fix."""

from __future__ import annotations

import math
from dataclasses import is_dataclass
from typing import Any, get_args, get_type_hints

from omegaconf import DictConfig

from dropout_risk.config.optim_args import optimizer_args, optimizer_keys
from dropout_risk.config.paths import pipeline_command
from dropout_risk.config.safety import check_config
from dropout_risk.config.schema import ACTIVATION_NAMES, SCHEMA_VERSION, Config
from dropout_risk.config.targets import check_targets
from dropout_risk.errors import ConfigError

ACCELERATORS = ("cpu", "gpu", "cuda", "auto")
PROGRESS = ("auto", "bar", "lines", "none")


def check_pipeline(cfg: DictConfig, pipeline: str) -> None:
    """A pitfall preset runs from the pipeline it was written for; say which one otherwise."""
    p = cfg.pitfall
    if p.name and p.pipeline != pipeline:
        raise ConfigError(f"experiment=pitfall_{p.name} is a {p.pipeline} preset: run "
                          + pipeline_command(f"{p.pipeline}.py", f"experiment=pitfall_{p.name}"))
    if pipeline == "train" and cfg.get("sweep") is not None and list(cfg.sweep.lr_over_gd_threshold):
        raise ConfigError("sweep.lr_over_gd_threshold scans learning rates (experiment=edge_of_stability): run "
                          + pipeline_command("sweep.py") + " with it")


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field holds (`SweepConfig | None` -> SweepConfig), None for plain values and dicts."""
    if is_dataclass(hint):
        return hint  # type: ignore[return-value]
    return next((a for a in get_args(hint) if is_dataclass(a)), None)


def check_known_keys(node: dict, schema: type = Config, path: str = "") -> None:
    """Every key of a (resolved) config is one the schema knows: `+foo=1` or `+data.foo=1` would
    otherwise be logged as a param and used by nothing. `tags` and `baselines.models` are free-form;
    `optim` is checked against its optimiser's constructor (config/optim_args.py)."""
    import difflib

    hints = get_type_hints(schema)
    for key, value in node.items():
        here = f"{path}.{key}" if path else str(key)
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(hints), n=1)
            hint = (f"did you mean {path + '.' if path else ''}{close[0]}?" if close
                    else f"keys here: {', '.join(k for k in hints if not k.startswith('_'))}")
            free = f"; a value of your own goes under tags (+tags.{key}=...)" if not path else ""
            raise ConfigError(f"unknown config key '{here}': {hint}{free}")
        sub = _dataclass_in(hints[key])
        if sub is not None and isinstance(value, dict) and here != "optim":
            check_known_keys(value, sub, here)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def validate_keys(cfg: DictConfig) -> dict:
    """The checks that hold for every job of a multirun alike (`-m` checks them once, before any
    job): what makes a config data (config/safety.py: no resolver call anywhere), its schema
    version, the `_target_` allow-list and that every key is known. Returns the resolved config."""
    resolved = check_config(cfg)  # first: reading any value resolves it
    version = resolved.get("schema_version", SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"schema_version={version} was written by a newer dropout-risk (this one reads "
            f"<= {SCHEMA_VERSION}); upgrade dropout-risk to run this config"
        )
    check_targets(resolved)
    check_known_keys(resolved)
    if "optim" in resolved:
        optimizer_keys(resolved["optim"])  # +optim.lrr=0.1: a key torch would refuse, in every job alike
    return resolved


def validate(cfg: DictConfig) -> None:
    """Checks beyond the schema's types. Raises ConfigError naming the key and the fix.
    First the keys (validate_keys), then the values alone (ranges, combinations, the optimiser's
    arguments): a multirun job with a bad value fails alone, the others run."""
    resolved = validate_keys(cfg)

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    d, m, o, t = cfg.data, cfg.model, cfg.optim, cfg.trainer
    need(d.kind in ("cohort", "csv", "uci_dropout"), f"data.kind={d.kind!r} is unknown: use data=cohort, data=csv or data=uci_dropout")
    need(math.isfinite(o.lr), f"optim.lr={o.lr} must be a finite number: pass a positive learning rate, e.g. optim.lr=1e-3")
    need(o.lr > 0, f"optim.lr={o.lr} must be > 0: pass a positive learning rate, e.g. optim.lr=1e-3")
    need(math.isfinite(o.weight_decay), f"optim.weight_decay={o.weight_decay} must be a finite number, e.g. 0.01")
    need(o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay} must be >= 0")
    need(t.accelerator in ACCELERATORS,
         f"trainer.accelerator={t.accelerator!r} is unknown: use one of {', '.join(ACCELERATORS)}")
    need(t.accelerator not in ("gpu", "cuda") or cuda_available(),
         f"trainer.accelerator={t.accelerator}: this machine has no CUDA GPU (torch.cuda.is_available() is false); "
         "pass trainer.accelerator=cpu")
    need(t.progress in PROGRESS, f"trainer.progress={t.progress!r} is unknown: use one of {', '.join(PROGRESS)}")
    need(t.max_epochs >= 1, f"trainer.max_epochs={t.max_epochs} must be >= 1: pass e.g. trainer.max_epochs=20")
    need(d.batch_size >= 1, f"data.batch_size={d.batch_size} must be >= 1: pass e.g. data.batch_size=256")
    need(0 < d.val_frac < 1 and 0 < d.test_frac < 1 and d.val_frac + d.test_frac < 0.9,
         f"data.val_frac={d.val_frac}, data.test_frac={d.test_frac}: each must be in (0, 1) and together < 0.9")
    need(len(m.hidden) >= 1 and all(h >= 1 for h in m.hidden),
         f"model.hidden={list(m.hidden)} must list at least one positive layer width, e.g. model.hidden=[64,32]")
    need(cfg.loss.name in ("bce", "mse"), f"loss.name={cfg.loss.name!r} is unknown: use loss=bce or loss=mse")
    need(cfg.guard.factor > 1, f"guard.factor={cfg.guard.factor} must be > 1, e.g. guard.factor=10")
    need(cfg.calibration.method in ("temperature", "none"),
         f"calibration.method={cfg.calibration.method!r} is unknown: use calibration=temperature or calibration=none")
    need(cfg.pitfall.pipeline in ("train", "sweep"),
         f"pitfall.pipeline={cfg.pitfall.pipeline!r} is unknown: use train or sweep")
    need(cfg.mechanism.every_n_steps >= 0,
         f"mechanism.every_n_steps={cfg.mechanism.every_n_steps} must be >= 0 (0 turns the mechanism metrics off)")
    need(cfg.tracking.reliability_every_n_epochs >= 1, "tracking.reliability_every_n_epochs must be >= 1")
    need(cfg.tracking.step_metrics_every_n_steps >= 1, "tracking.step_metrics_every_n_steps must be >= 1")
    st = cfg.stability
    need(st.every_n_steps >= 0, f"stability.every_n_steps={st.every_n_steps} must be >= 0 (0 turns sharpness off)")
    need(st.eval_rows >= 1, f"stability.eval_rows={st.eval_rows} must be >= 1")
    need(st.iters >= 1 and st.iters_per_estimate >= 1,
         "stability.iters and stability.iters_per_estimate must be >= 1 (Hessian-vector products per estimate)")
    # (a margin >= guard.factor - 1 is allowed but never fires: the guard stops such a rise first)
    need(st.catapult_margin > 0, f"stability.catapult_margin={st.catapult_margin} must be > 0, e.g. 0.5")
    need(m.activation in ACTIVATION_NAMES,
         f"model.activation={m.activation!r} is unknown: use one of {', '.join(ACTIVATION_NAMES)}")
    es = t.early_stopping
    need(es.patience >= 1, f"trainer.early_stopping.patience={es.patience} must be >= 1 "
         "(trainer.early_stopping.enabled=false turns early stopping off)")
    need(es.min_delta >= 0, f"trainer.early_stopping.min_delta={es.min_delta} must be >= 0")
    need(d.cv_folds == 0 or d.cv_folds >= 2,
         f"data.cv_folds={d.cv_folds} must be 0 (one split) or >= 2, e.g. data.cv_folds=5")
    need(d.cv_fold is None or (d.cv_folds >= 2 and 0 <= d.cv_fold < d.cv_folds),
         f"data.cv_fold={d.cv_fold} must be one of 0..{d.cv_folds - 1} of data.cv_folds={d.cv_folds}"
         if d.cv_folds >= 2 else f"data.cv_fold={d.cv_fold} needs data.cv_folds=K >= 2 (or data.cv_fold=null)")
    need(cfg.get("sweep") is None or d.cv_folds == 0,
         f"data.cv_folds={d.cv_folds}: cross-validation runs from {pipeline_command('train.py')}, not in a sweep")
    if d.kind in ("csv", "uci_dropout"):
        need(bool(d.path), f"data={d.kind} needs a file: pass data.path=/path/to/file.csv")
    if d.kind == "csv":
        need(bool(d.target), "data=csv needs the label column: pass data.target=COLUMN")
        need(d.positive is not None, "data=csv needs the positive label: pass data.positive=VALUE")
    optimizer_args(resolved["optim"])  # last: the value checks above name the key better than torch does
