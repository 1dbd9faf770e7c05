"""A config as a file: the resolved config saved so Hydra can run it again, and read back."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dropout_risk.config.safety import check_received_text
from dropout_risk.config.schema import (
    ADDED_KEYS,
    REMOVED_KEYS,
    SCHEMA_VERSION,
    AdamWConfig,
    Config,
    OptimConfig,
    SGDConfig,
)
from dropout_risk.config.targets import check_targets
from dropout_risk.config.validate import cuda_available, validate
from dropout_risk.errors import ConfigError, ReproduceError
from dropout_risk.tracking.names import CONFIG_ARTIFACT, TRIAL_NAME

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


_OPTIM_NODES = {"torch.optim.AdamW": AdamWConfig, "torch.optim.SGD": SGDConfig}


def load_config_file(path: str | Path) -> DictConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReproduceError(f"config={path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    return load_config_text(text, f"config file {path}")


def load_config_text(text: str, source: str) -> DictConfig:
    """A saved config as the training schema sees it. Refuses (one line): not YAML, not a mapping,
    what a received config may not hold (config/safety.py: resolver calls such as ${oc.env:...},
    defaults beyond the schema, hydra code hooks), a newer schema_version, a `_target_` outside
    the allow-list, unknown keys, wrong types, missing required keys and values `validate` rejects."""
    from omegaconf.errors import OmegaConfBaseException

    from dropout_risk.config.explain import explain_error

    try:
        raw = check_received_text(text)  # YAML, a mapping, then nothing a received config may not hold
    except ConfigError as exc:
        raise ReproduceError(f"{source}: {exc}") from None
    raw = dict(raw)
    raw.pop("defaults", None)  # names the schema for plain Hydra; applied here directly
    raw.pop("hydra", None)  # only where Hydra writes its files (check_received): nothing of a re-run's
    version = raw.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ReproduceError(f"{source}: schema_version={version!r} must be an integer (this dropout-risk writes {SCHEMA_VERSION})")
    if version > SCHEMA_VERSION:  # before the key checks: a newer schema may have keys we do not know
        raise ReproduceError(f"{source}: schema_version={version} was written by a newer dropout-risk (this one reads "
                             f"<= {SCHEMA_VERSION}); upgrade dropout-risk to re-run it")
    for key in REMOVED_KEYS:  # saved while the key existed; nothing a result depends on
        section, _, leaf = key.rpartition(".")
        node = raw
        for part in section.split(".") if section else []:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    for key, value in ADDED_KEYS.items():  # saved before the key existed: what it meant then
        section, _, leaf = key.rpartition(".")
        node = raw
        for part in section.split(".") if section else []:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf not in node:
            node[leaf] = value
    try:
        check_targets(raw)  # before anything is merged or instantiated
    except ConfigError as exc:
        raise ReproduceError(f"{source}: {exc}") from None
    schema = OmegaConf.structured(Config)
    optim = raw.get("optim")
    target = optim.get("_target_") if isinstance(optim, dict) else None
    schema.optim = OmegaConf.structured(_OPTIM_NODES.get(target, OptimConfig))
    if target not in _OPTIM_NODES:  # another allow-listed optimiser: its own arguments are its business
        OmegaConf.set_struct(schema.optim, False)
    try:
        cfg = OmegaConf.merge(schema, raw)
    except OmegaConfBaseException as exc:
        raise ReproduceError(f"{source}: {explain_error(exc, [])}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ReproduceError(f"{source} lacks {', '.join(missing)}: it is not a complete saved config; use a run's "
                             f"{CONFIG_ARTIFACT}")
    if cfg.trainer.accelerator in ("gpu", "cuda") and not cuda_available():
        raise ReproduceError(f"{source} trains on trainer.accelerator={cfg.trainer.accelerator} and this machine has "
                             "no CUDA device: reproduce it on a machine with a GPU (a CPU re-run gives other numbers)")
    try:
        validate(cfg)
    except ConfigError as exc:
        raise ReproduceError(f"{source}: {exc}") from None
    return cfg  # type: ignore[return-value]


def is_sweep_config(cfg: DictConfig) -> bool:
    """A sweep's own config (not one of its trials': those are named scan-NNN-lr... / refine-...)."""
    return cfg.get("sweep") is not None and not TRIAL_NAME.match(str(cfg.tracking.run_name or ""))
