"""The config schema: dataclasses registered with Hydra's ConfigStore (the checks the types
cannot express are in config/validate.py and config/targets.py).

The YAML files under `conf/` hold the defaults; these classes hold the *shape*. Because the
schema is structured, a typo'd key (`optim.learning_rate=...`) or a wrong type
(`trainer.max_epochs=ten`) fails while the config is composed, before any data is touched.

A field's default here is either MISSING (`???`: the YAML always sets it) or exactly the YAML's
value, for the keys some composition gets without the YAML that sets them: the `data.*` keys
only one data option sets, the `sweep` group (only conf/sweep.yaml picks it; `sweep.*` overrides
and the preset experiment=pitfall_lr_divergence on the training app build `sweep` from these
defaults), `schema_version` and `tags`. tests/config/test_defaults.py holds every default to that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# Bumped when a key is renamed or removed; a config written by a newer schema is refused.
SCHEMA_VERSION = 1

# Keys added since: a saved config without one meant this value (config/saved.py fills it in).
ADDED_KEYS: dict[str, object] = {
    "tracking.step_metrics_every_n_steps": 1,
    "stability.every_n_steps": 0,
    "stability.eval_rows": 256,
    "stability.iters": 20,
    "stability.iters_per_estimate": 2,
    "stability.catapult_margin": 0.5,
    "tracking.log_pyfunc": False,  # before it, no run logged an MLflow pyfunc model
    "tracking.register_as": None,
    "tracking.figures": True,  # before it, every run drew its figures
    "trainer.progress": "auto",  # it replaced trainer.progress_bar (REMOVED_KEYS)
}
# Keys a saved config may hold that are gone: display only, dropped when it is read back.
REMOVED_KEYS = ("trainer.progress_bar",)


# model.activation choices (dropout_risk.model.mlp maps them to torch.nn classes).
ACTIVATION_NAMES = ("relu", "sigmoid", "tanh", "gelu", "silu", "leaky_relu", "elu")


@dataclass
class DataConfig:
    kind: str = MISSING  # cohort | csv | uci_dropout
    n_students: int = 20000  # cohort only
    path: str | None = None  # csv / uci_dropout
    target: str | None = None  # csv
    positive: str | None = None  # csv: the label value that counts as "dropped out"
    sep: str | None = None  # csv: None = sniff
    drop_columns: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)  # csv: extra columns to one-hot
    # csv / uci_dropout: numeric columns kept although they look like an ID (distinct integers
    # increasing with the row order, e.g. 1..n), which are refused otherwise
    allow_id_like: list[str] = field(default_factory=list)
    drop_enrolled: bool = False  # uci_dropout: drop students still enrolled
    early_warning: bool = False  # uci_dropout: drop 2nd-semester columns (they leak the future)
    val_frac: float = 0.15
    test_frac: float = 0.15
    batch_size: int = MISSING
    cv_folds: int = 0  # K >= 2: stratified K-fold cross-validation (each fold a child run); 0: one split
    cv_fold: int | None = None  # the test fold of this run (0..K-1), set per fold by cross-validation


@dataclass
class ModelConfig:
    hidden: list[int] = MISSING
    activation: str = MISSING  # a name in dropout_risk.model.ACTIVATIONS


@dataclass
class OptimConfig:
    _target_: str = MISSING
    _partial_: bool = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    fused: bool | None = MISSING  # None: torch's default; true: one fused kernel per step (CPU and CUDA)
    # Not optimizer arguments. zero_grad=false is the pitfall switch: it skips
    # optimizer.zero_grad(), so gradients accumulate across steps. scan_range is the learning-rate
    # range a divergence sweep scans by default for this optimiser.
    zero_grad: bool = MISSING
    scan_range: list[float] = MISSING


@dataclass
class AdamWConfig(OptimConfig):  # conf/optim/adamw.yaml
    betas: list[float] = MISSING
    eps: float = MISSING


@dataclass
class SGDConfig(OptimConfig):  # conf/optim/sgd.yaml
    momentum: float = MISSING
    nesterov: bool = MISSING


@dataclass
class LossConfig:
    name: str = MISSING  # bce: BCE-with-logits | mse: MSE on the predicted probability


@dataclass
class EarlyStoppingConfig:
    """Stop when validation log loss has not improved by `min_delta` for `patience` epochs; the
    run then reports (metrics, diagrams, temperature, predictions, model) its best epoch."""

    enabled: bool = MISSING  # false: train the full trainer.max_epochs and report the last epoch
    patience: int = MISSING  # epochs without improvement before stopping
    min_delta: float = MISSING  # the smallest decrease of val/log_loss that counts as improvement


@dataclass
class TrainerConfig:
    max_epochs: int = MISSING
    accelerator: str = MISSING  # cpu | gpu | auto
    devices: int = MISSING
    deterministic: bool = MISSING
    num_threads: int = MISSING  # torch intra-op threads; 0 keeps torch's default
    progress: str = MISSING  # auto (bar on a terminal, else lines) | bar | lines | none
    seed: int | None = None  # initialisation and data order; None: the top-level seed (which also seeds data and split)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class GuardConfig:
    """Divergence guard: stop at the step where the loss is non-finite or exceeds
    `factor` times the first step's loss."""

    enabled: bool = MISSING
    factor: float = MISSING


@dataclass
class MechanismConfig:
    """Backprop made visible (dropout_risk.analysis.mechanism)."""

    grad_norm: bool = MISSING  # train/grad_norm: the norm of the gradient each step used
    every_n_steps: int = MISSING  # mechanism/act|error|grad/l{l} every N steps (from step 1); 0: off
    figure: bool = MISSING  # plots/backprop_flow.png: layer magnitudes at the start and end of training
    page: bool = MISSING  # mechanism/index.html: the mechanism lab page for one validation student
    student: int | None = MISSING  # that student's row in the validation split; None: the first who dropped out


@dataclass
class StabilityConfig:
    """Sharpness during training (analysis/sharpness.py) and the catapult outcome."""

    every_n_steps: int = MISSING  # estimate lambda_max every N steps; 0: off
    eval_rows: int = MISSING  # the fixed evaluation batch: the first N training rows
    iters: int = MISSING  # products of the first estimate
    iters_per_estimate: int = MISSING  # products of each later (warm-started) estimate
    catapult_margin: float = MISSING  # rose above (1 + margin) x the first loss, then came back: catapult


@dataclass
class PitfallConfig:
    """Set by the presets conf/experiment/pitfall_*.yaml (dropout_risk.pitfalls)."""

    name: str | None = MISSING  # None: an ordinary run
    pipeline: str = MISSING  # train | sweep: the pipeline that runs the preset
    counterpart: list[str] = MISSING  # key=value overrides that make the healthy run
    out_dir: str | None = MISSING  # the comparison's folder; None: compare_out/pitfall-<name>-<time>


@dataclass
class CalibrationConfig:
    method: str = MISSING  # temperature: one T fitted on validation logits | none
    figure: bool = MISSING  # plots/reliability_calibration.png (before/after side by side)


@dataclass
class BaselinesConfig:
    """scikit-learn models fitted on the run's own training rows and preprocessing, scored on the
    same validation and test rows (dropout_risk.model.baselines)."""

    # name -> keyword arguments of its estimator; names: logreg (LogisticRegression),
    # hgb (HistGradientBoostingClassifier). {} (baselines=none): no baselines.
    models: dict[str, dict[str, Any]] = MISSING
    n_resamples: int = MISSING  # bootstrap resamples for the test intervals and the MLP-vs-baseline verdict


@dataclass
class TrackingConfig:
    uri: str = MISSING
    artifact_location: str | None = MISSING  # None: the server decides
    experiment: str = MISSING
    run_name: str | None = MISSING  # None: named from optimiser, lr, seed
    log_model: bool = MISSING
    reliability_every_n_epochs: int = MISSING
    step_metrics_every_n_steps: int = MISSING
    # the trained model as an MLflow pyfunc model `pyfunc_model` (raw columns in, risk out; ~0.2 s a run)
    log_pyfunc: bool = MISSING
    register_as: str | None = MISSING  # also register that model in the Model Registry under this name
    # the run's reliability diagrams and loss.png (~0.25 s a run: the largest part of a sweep
    # trial's report); false logs the numbers and predictions.npz only (compare.py redraws from it)
    figures: bool = MISSING


# The sweep group keeps its values (those of conf/sweep/default.yaml): only conf/sweep.yaml picks
# the group, and `sweep.*` overrides or the preset experiment=pitfall_lr_divergence on the training
# app build `sweep` from these defaults.
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
    lr_over_gd_threshold: list[float] = field(default_factory=list)  # scan lrs = these x 2/lambda_max(0)
    seeds: int = 3  # every scanned lr is trained with this many seeds (initialisation and data order)
    population: bool = True  # train claimed trials together as one population (training/population.py)
    population_size: int | None = None  # most members per population; None: a phase's trials / n_workers
    role: str = "auto"  # auto: create or join, work, report | worker | report
    search: list[str] = field(default_factory=list)  # refine also over "key:low:high" (log-uniform)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    sharpness_iters: int = 100
    heartbeat_s: int = 10  # RDB storages: a worker silent this long x3 is taken as dead


@dataclass
class Config:
    schema_version: int = SCHEMA_VERSION
    seed: int = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = MISSING
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    mechanism: MechanismConfig = field(default_factory=MechanismConfig)
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    pitfall: PitfallConfig = field(default_factory=PitfallConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags
    sweep: SweepConfig | None = None  # set by pipelines/sweep.py (conf/sweep.yaml)


# The compare app's request (conf/compare.yaml, which sets every key).
@dataclass
class CompareTrackingConfig:
    uri: str = MISSING
    artifact_location: str | None = MISSING  # for a new comparison experiment; None: `artifacts/` beside a SQLite store


@dataclass
class CompareConfig:
    runs: list[str] = MISSING  # run ids
    sweep: str | None = MISSING  # a sweep's parent run id: all its trials
    filter: str | None = MISSING  # an MLflow search filter
    experiment: str | None = MISSING  # restrict sweep/filter to one experiment (name or id)
    max_runs: int = MISSING
    out_dir: str = MISSING
    tracking: CompareTrackingConfig = field(default_factory=CompareTrackingConfig)
    log_to_mlflow: bool = MISSING
    comparison_experiment: str = MISSING


# The reproduce app's request (conf/reproduce.yaml, which sets every key).
@dataclass
class ReproduceTrackingConfig:
    uri: str = MISSING  # the store the original run is in; the re-run goes there too
    artifact_location: str | None = MISSING  # for a new experiment only; None: the original's, or beside SQLite


@dataclass
class ReproduceConfig:
    run_id: str | None = MISSING  # a run (or a sweep's parent run) to re-run
    config: str | None = MISSING  # a config file to re-run (with run_id: compared with that run)
    tolerance: float = MISSING  # 0: exact; else |re-run - original| <= tolerance * max(1, |original|)
    population_tolerance: float = MISSING  # the tolerance at least, for a population member re-run alone
    allow_data_change: bool = MISSING  # re-run even if the data's fingerprint differs from the run's
    all: bool = MISSING  # sweep parent: every trial, not only the best
    data_path: str | None = MISSING  # the data file at another path (its sha256 is still checked)
    tracking: ReproduceTrackingConfig = field(default_factory=ReproduceTrackingConfig)


# The predict app's request (conf/predict.yaml, which sets every key).
@dataclass
class PredictTrackingConfig:
    uri: str = MISSING  # the store the model's run (or registered model) is in


@dataclass
class PredictDataConfig:
    path: str | None = MISSING  # the students to score: a CSV with the training file's columns
    sep: str | None = MISSING  # None: sniffed, as at training


@dataclass
class PredictConfig:
    run_id: str | None = MISSING  # a training run: its pyfunc model runs:/<id>/pyfunc_model
    model_uri: str | None = MISSING  # or any model URI (models:/<name>/<version>, runs:/...)
    data: PredictDataConfig = field(default_factory=PredictDataConfig)
    out: str = MISSING  # the scored rows: the input's columns plus the risk columns
    tracking: PredictTrackingConfig = field(default_factory=PredictTrackingConfig)


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
    cs.store(group="baselines", name="baselines_schema", node=BaselinesConfig)
    cs.store(group="sweep", name="sweep_schema", node=SweepConfig)
    cs.store(name="reproduce_schema", node=ReproduceConfig)  # the reproduce app's request (conf/reproduce.yaml)
    cs.store(name="predict_schema", node=PredictConfig)  # the predict app's request (conf/predict.yaml)
    # compare_schema (CompareConfig) is stored by dropout_risk.compare.request.register_compare_config

