"""The config schema: dataclasses registered with Hydra's ConfigStore, plus the checks
that the types alone cannot express (value ranges, the `_target_` allow-list).

The YAML files under `conf/` hold the defaults; these classes hold the *shape*. Because the
schema is structured, a typo'd key (`optim.learning_rate=...`) or a wrong type
(`trainer.max_epochs=ten`) fails while the config is composed, before any data is touched.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from dropout_risk.errors import ConfigError

# Bumped when a key is renamed or removed; a config written by a newer schema is refused.
SCHEMA_VERSION = 1
# model.activation choices (dropout_risk.model maps them to torch.nn classes).
ACTIVATION_NAMES = ("relu", "sigmoid", "tanh", "gelu", "silu", "leaky_relu", "elu")


@dataclass
class DataConfig:
    kind: str = "cohort"  # cohort | csv | uci_dropout
    n_students: int = 20000  # cohort only
    path: str | None = None  # csv / uci_dropout
    target: str | None = None  # csv
    positive: str | None = None  # csv: the label value that counts as "dropped out"
    sep: str | None = None  # csv: None = sniff
    drop_columns: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)  # csv: extra columns to one-hot
    drop_enrolled: bool = False  # uci_dropout: drop students still enrolled
    early_warning: bool = False  # uci_dropout: drop 2nd-semester columns (they leak the future)
    val_frac: float = 0.15
    test_frac: float = 0.15
    batch_size: int = 256


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    activation: str = "relu"  # a name in dropout_risk.model.ACTIVATIONS


@dataclass
class OptimConfig:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0
    fused: bool | None = None  # None: torch's default; true: one fused kernel per step (CPU and CUDA)
    # Not optimizer arguments. zero_grad=false is the pitfall switch: it skips
    # optimizer.zero_grad(), so gradients accumulate across steps. scan_range is the learning-rate
    # range a divergence sweep scans by default for this optimiser.
    zero_grad: bool = True
    scan_range: list[float] = field(default_factory=lambda: [1e-4, 10.0])


@dataclass
class AdamWConfig(OptimConfig):
    _target_: str = "torch.optim.AdamW"
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class LossConfig:
    name: str = "bce"  # bce: BCE-with-logits | mse: MSE on the predicted probability


@dataclass
class TrainerConfig:
    max_epochs: int = 20
    accelerator: str = "cpu"  # cpu | gpu | auto
    devices: int = 1
    deterministic: bool = True
    num_threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    progress_bar: bool = False


@dataclass
class GuardConfig:
    """Divergence guard: stop at the step where the loss is non-finite or exceeds
    `factor` times the first step's loss."""

    enabled: bool = True
    factor: float = 10.0


@dataclass
class MechanismConfig:
    """Backprop made visible (src/dropout_risk/mechanism.py)."""

    grad_norm: bool = True  # train/grad_norm: the norm of the gradient each step used
    every_n_steps: int = 25  # mechanism/act|error|grad/l{l} every N steps (from step 1); 0: off
    figure: bool = True  # plots/backprop_flow.png: layer magnitudes at the start and end of training
    page: bool = True  # mechanism/index.html: the mechanism lab page for one validation student
    student: int | None = None  # that student's row in the validation split; None: the first who dropped out


@dataclass
class PitfallConfig:
    """Set by the presets conf/experiment/pitfall_*.yaml (src/dropout_risk/pitfalls.py)."""

    name: str | None = None  # None: an ordinary run
    pipeline: str = "train"  # train | sweep: the pipeline that runs the preset
    counterpart: list[str] = field(default_factory=list)  # key=value overrides that make the healthy run
    out_dir: str | None = None  # the comparison's folder; None: compare_out/pitfall-<name>-<time>


@dataclass
class CalibrationConfig:
    method: str = "temperature"  # temperature: one T fitted on validation logits | none
    figure: bool = True  # plots/reliability_calibration.png (before/after side by side)


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_location: str | None = "mlruns/artifacts"  # None: the server decides
    experiment: str = "dropout-risk"
    run_name: str | None = None  # None: named from optimiser, lr, seed
    log_model: bool = True
    reliability_every_n_epochs: int = 1


@dataclass
class PrunerConfig:
    name: str = "median"  # median | none (refine trials only; the scan is never pruned)
    n_startup_trials: int = 2  # trials that finish before pruning starts
    n_warmup_steps: int = 2  # epochs before a trial can be pruned


@dataclass
class SweepConfig:
    study: str | None = None  # None: named from the optimiser and a hash of the config
    storage: str | None = None  # None: journal file mlruns/optuna-journal.log; or sqlite:///, postgresql://
    n_scan: int = 24
    lr_min: float | None = None  # None: optim.scan_range
    lr_max: float | None = None
    n_refine: int = 8
    n_workers: int = 1
    role: str = "auto"  # auto: create or join, work, report | worker | report
    search: list[str] = field(default_factory=list)  # refine also over "key:low:high" (log-uniform)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    sharpness_iters: int = 100
    heartbeat_s: int = 10  # RDB storages: a worker silent this long x3 is taken as dead


@dataclass
class Config:
    schema_version: int = SCHEMA_VERSION
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = MISSING
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    mechanism: MechanismConfig = field(default_factory=MechanismConfig)
    pitfall: PitfallConfig = field(default_factory=PitfallConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags
    sweep: SweepConfig | None = None  # set by pipelines/sweep.py (conf/sweep.yaml)


def check_pipeline(cfg: DictConfig, pipeline: str) -> None:
    """A pitfall preset runs from the pipeline it was written for; say which one otherwise."""
    p = cfg.pitfall
    if p.name and p.pipeline != pipeline:
        raise ConfigError(f"experiment=pitfall_{p.name} is a {p.pipeline} preset: run "
                          f"python pipelines/{p.pipeline}.py experiment=pitfall_{p.name}")


def register_configs() -> None:
    """Register the schema so `conf/*.yaml` can name it in their defaults lists."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="optim", name="adamw_schema", node=AdamWConfig)
    cs.store(group="optim", name="sgd_schema", node=SGDConfig)
    cs.store(group="loss", name="loss_schema", node=LossConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="tracking", name="tracking_schema", node=TrackingConfig)
    cs.store(group="calibration", name="calibration_schema", node=CalibrationConfig)
    cs.store(group="sweep", name="sweep_schema", node=SweepConfig)
    from dropout_risk.reproduce import ReproduceConfig  # the reproduce app's request (conf/reproduce.yaml)

    cs.store(name="reproduce_schema", node=ReproduceConfig)


# --- the _target_ allow-list -------------------------------------------------------------
# A config is data. Reproducing a config someone sent you must not run arbitrary code, so
# every `_target_` must resolve to a torch optimiser, a torch activation, or this package.


def _is_allowed_target(target: str) -> bool:
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        return False
    if module_name == "torch.optim":
        import torch.optim

        obj = getattr(torch.optim, attr, None)
        return inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)
    if module_name == "torch.nn":
        import torch.nn.modules.activation as act

        obj = getattr(act, attr, None)
        return inspect.isclass(obj) and obj.__module__ == act.__name__
    if target.startswith("dropout_risk."):
        try:
            obj = getattr(importlib.import_module(module_name), attr, None)
        except ImportError:
            return False
        return obj is not None
    return False


def check_targets(node: Any, path: str = "") -> None:
    """Raise ConfigError for the first `_target_` outside the allow-list."""
    if isinstance(node, DictConfig):
        if node._is_none() or node._is_missing():
            return
        items = node.items_ex(resolve=False)
    elif isinstance(node, dict):
        items = node.items()
    elif isinstance(node, ListConfig | list):
        items = ((str(i), v) for i, v in enumerate(node))
    else:
        return
    for key, value in items:
        here = f"{path}.{key}" if path else str(key)
        if key == "_target_":
            if not isinstance(value, str) or not _is_allowed_target(value):
                raise ConfigError(
                    f"{here}={value!r} is not allowed: configs may only target torch.optim optimisers, "
                    "torch.nn activations or dropout_risk.*; use optim=adamw or optim=sgd"
                )
        else:
            check_targets(value, here)


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
    if d.kind in ("csv", "uci_dropout"):
        need(bool(d.path), f"data={d.kind} needs a file: pass data.path=/path/to/file.csv")
    if d.kind == "csv":
        need(bool(d.target), "data=csv needs the label column: pass data.target=COLUMN")
        need(d.positive is not None, "data=csv needs the positive label: pass data.positive=VALUE")


_OPTIM_SCHEMAS = {"torch.optim.AdamW": "adamw_schema", "torch.optim.SGD": "sgd_schema"}


def saved_config_yaml(cfg: DictConfig) -> str:
    """The resolved config as a file Hydra can run again under the same schema:
    `python pipelines/train.py --config-dir DIR --config-name config`."""
    resolved = to_container(cfg)
    schema = _OPTIM_SCHEMAS.get(str(cfg.optim._target_))
    defaults: list = ["config_schema", *([{"optim": schema}] if schema else []), "_self_"]
    return OmegaConf.to_yaml(OmegaConf.create({"defaults": defaults, **resolved}))


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain dicts/lists (for logging and hashing)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]
