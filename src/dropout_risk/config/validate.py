"""Checks beyond the schema's types: value ranges and the pipeline a preset belongs to.
Each raises ConfigError naming the key and the fix."""

from __future__ import annotations

from omegaconf import DictConfig

from dropout_risk.config.schema import ACTIVATION_NAMES, SCHEMA_VERSION
from dropout_risk.config.targets import check_targets
from dropout_risk.errors import ConfigError


def check_pipeline(cfg: DictConfig, pipeline: str) -> None:
    """A pitfall preset runs from the pipeline it was written for; say which one otherwise."""
    p = cfg.pitfall
    if p.name and p.pipeline != pipeline:
        raise ConfigError(f"experiment=pitfall_{p.name} is a {p.pipeline} preset: run "
                          f"python pipelines/{p.pipeline}.py experiment=pitfall_{p.name}")


def validate(cfg: DictConfig) -> None:
    """Checks beyond the schema's types. Raises ConfigError naming the key and the fix."""
    version = cfg.get("schema_version", SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"schema_version={version} was written by a newer dropout-risk (this one reads "
            f"<= {SCHEMA_VERSION}); upgrade dropout-risk to run this config"
        )
    check_targets(cfg)

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    d, m, o, t = cfg.data, cfg.model, cfg.optim, cfg.trainer
    need(d.kind in ("cohort", "csv", "uci_dropout"), f"data.kind={d.kind!r} is unknown: use data=cohort, data=csv or data=uci_dropout")
    need(o.lr > 0, f"optim.lr={o.lr} must be > 0: pass a positive learning rate, e.g. optim.lr=1e-3")
    need(o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay} must be >= 0")
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
         f"data.cv_folds={d.cv_folds}: cross-validation runs from python pipelines/train.py, not in a sweep")
    if d.kind in ("csv", "uci_dropout"):
        need(bool(d.path), f"data={d.kind} needs a file: pass data.path=/path/to/file.csv")
    if d.kind == "csv":
        need(bool(d.target), "data=csv needs the label column: pass data.target=COLUMN")
        need(d.positive is not None, "data=csv needs the positive label: pass data.positive=VALUE")
