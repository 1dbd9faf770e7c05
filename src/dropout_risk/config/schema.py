"""The config schema: dataclasses registered with Hydra's ConfigStore (the checks the types
cannot express are in config/validate.py and config/targets.py).

The YAML files under `conf/` hold the defaults; these classes hold the *shape*. Because the
schema is structured, a typo'd key (`optim.learning_rate=...`) or a wrong type
(`trainer.max_epochs=ten`) fails while the config is composed, before any data is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# Bumped when a key is renamed or removed; a config written by a newer schema is refused.
SCHEMA_VERSION = 1


# model.activation choices (dropout_risk.model.mlp maps them to torch.nn classes).
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
    """Backprop made visible (dropout_risk.analysis.mechanism)."""

    grad_norm: bool = True  # train/grad_norm: the norm of the gradient each step used
    every_n_steps: int = 25  # mechanism/act|error|grad/l{l} every N steps (from step 1); 0: off
    figure: bool = True  # plots/backprop_flow.png: layer magnitudes at the start and end of training
    page: bool = True  # mechanism/index.html: the mechanism lab page for one validation student
    student: int | None = None  # that student's row in the validation split; None: the first who dropped out


@dataclass
class PitfallConfig:
    """Set by the presets conf/experiment/pitfall_*.yaml (dropout_risk.pitfalls)."""

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
    from dropout_risk.config.schema import (
        ReproduceConfig,  # the reproduce app's request (conf/reproduce.yaml)
    )

    cs.store(name="reproduce_schema", node=ReproduceConfig)


@dataclass
class CompareTrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_location: str | None = None  # for a new comparison experiment; None: `artifacts/` beside a SQLite store


@dataclass
class CompareConfig:
    runs: list[str] = field(default_factory=list)  # run ids
    sweep: str | None = None  # a sweep's parent run id: all its trials
    filter: str | None = None  # an MLflow search filter
    experiment: str | None = None  # restrict sweep/filter to one experiment (name or id)
    max_runs: int = 32
    out_dir: str = "compare_out"
    tracking: CompareTrackingConfig = field(default_factory=CompareTrackingConfig)
    log_to_mlflow: bool = True
    comparison_experiment: str = "dropout-risk-comparisons"


@dataclass
class ReproduceTrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"  # the store the original run is in; the re-run goes there too
    artifact_location: str | None = None  # for a new experiment only; None: the original's, or beside SQLite


@dataclass
class ReproduceConfig:
    run_id: str | None = None  # a run (or a sweep's parent run) to re-run
    config: str | None = None  # a config file to re-run (with run_id: compared with that run)
    tolerance: float = 0.0  # 0: exact; else |re-run - original| <= tolerance * max(1, |original|)
    allow_data_change: bool = False  # re-run even if the data's fingerprint differs from the run's
    all: bool = False  # sweep parent: every trial, not only the best
    data_path: str | None = None  # the data file at another path (its sha256 is still checked)
    tracking: ReproduceTrackingConfig = field(default_factory=ReproduceTrackingConfig)
