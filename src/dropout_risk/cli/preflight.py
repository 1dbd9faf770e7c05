"""Compose and check the config once before Hydra does, so a bad override ends in one line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from dropout_risk.config.explain import explain_error
from dropout_risk.config.paths import CONF_DIR, PROJECT_ROOT
from dropout_risk.config.safety import check_command_line, check_received_text
from dropout_risk.errors import ConfigError

PIPELINES_DIR = PROJECT_ROOT / "pipelines"  # Hydra reads a relative --config-path from the script's folder
# What a command line asks for: run the job ("run"), print the config or Hydra's info ("print":
# --cfg, --resolve, --package, --info), run one job per combination ("multirun": -m), or something
# that reads no config of ours ("hydra": --help, --hydra-help, --version, --shell-completion, a flag
# Hydra does not know). The first three get the same checks; a multirun checks the values per job.
_PRINT_FLAGS = ("cfg", "resolve", "package", "info")
_HYDRA_FLAGS = ("help", "hydra_help", "shell_completion")


def received_config(args: list[str], config_name: str) -> tuple[Path, str, list[str], str]:
    """(config folder, config name, overrides, mode: run | print | multirun | hydra) for this
    command line. A config from someone else's folder (`--config-path DIR --config-name config`,
    or a name found only in `--config-dir DIR`) is checked as a received config
    (config/safety.py) before Hydra reads it: Hydra runs a file's hydra.callbacks before any check
    of ours. `--experimental-rerun` (a pickle: it runs code) is refused."""
    import argparse

    from hydra._internal.utils import get_args_parser

    if not any(a.startswith("-") for a in args):
        return CONF_DIR, config_name, args, "run"
    if "--version" in args:
        return CONF_DIR, config_name, args, "hydra"
    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        parsed, unknown = parser.parse_known_args(args)
    except (argparse.ArgumentError, SystemExit):  # e.g. a flag without its value: Hydra says so
        return CONF_DIR, config_name, args, "hydra"
    if parsed.experimental_rerun:
        raise ConfigError("--experimental-rerun loads a pickle, which can run code: re-run a logged config with "
                          "--config-path <absolute folder of its config.yaml> --config-name config")
    if unknown or any(getattr(parsed, f) for f in _HYDRA_FLAGS):
        mode = "hydra"
    elif parsed.multirun:
        mode = "multirun"
    elif any(getattr(parsed, f) for f in _PRINT_FLAGS):
        mode = "print"
    else:
        mode = "run"
    name = parsed.config_name or config_name
    file_name = name if name.endswith(".yaml") else f"{name}.yaml"
    path = parsed.config_path
    if path and path.startswith("pkg://"):  # an installed package's own configs
        return CONF_DIR, name, parsed.overrides, "hydra"
    dirs = [(Path(path) if Path(path).is_absolute() else PIPELINES_DIR / path) if path else CONF_DIR]
    if parsed.config_dir:
        dirs.append(Path(parsed.config_dir).resolve())
    found = next((d for d in dirs if (d / file_name).is_file()), None)
    if found is None:
        raise ConfigError(f"no {file_name} in {' or '.join(str(d) for d in dirs)}: pass the absolute folder of a "
                          "run's config.yaml as --config-path and --config-name config")
    if found.resolve() != CONF_DIR.resolve():
        file = found / file_name
        try:
            check_received_text(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {file}: cannot read it ({exc.__class__.__name__})") from None
        except ConfigError as exc:
            raise ConfigError(f"config file {file}: {exc}") from None
    if parsed.config_dir and mode != "hydra":  # its configs join the search path: Hydra composes those
        mode = "hydra"
    return found, name, parsed.overrides, mode


def covering_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs of a multirun (Hydra's own expansion of `a=1,2 b=x,y`) that between them use every
    value of every swept key once: each value is composed once, not each combination."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    seen: set[tuple[int, str]] = set()
    chosen = []
    for job in jobs:
        new = {(i, o) for i, o in enumerate(job)} - seen
        if new:
            chosen.append(job)
            seen |= new
    return chosen


def preflight(config_name: str = "config", argv: list[str] | None = None,
              on_composed: Callable[[DictConfig], None] | None = None) -> DictConfig | None:
    """Compose and check the config once before Hydra does, so that a bad override ends in one
    line (`error: ...`, exit 2) within a second, instead of Hydra's multi-line report or an error
    after torch/Lightning/MLflow have loaded. Every override is refused a resolver call first
    (configs are data), and a config from another folder (--config-path) is checked as received
    (`received_config`) and then composed from there. The same checks run under --cfg, --info,
    --resolve and --package; under -m every swept value is composed and every key checked
    (`covering_jobs`), and the values are checked per job (a job with a bad value fails alone).
    `on_composed(cfg)` runs once the config composed and names the right pipeline, before the
    value checks (which import torch for the `_target_` allow-list): the sweep starts its worker
    processes there, so their imports overlap everything after. Returns the checked config of a
    plain run (None for the other modes)."""
    from hydra import compose, initialize_config_dir

    from dropout_risk.config.validate import check_pipeline, validate, validate_keys

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        check_command_line(args)  # any flags: an override's resolver call is refused all the same
        folder, name, args, mode = received_config(args, config_name)
        jobs = covering_jobs(args) if mode == "multirun" else [args]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - a sweep the override grammar cannot read
        print(f"error: {explain_error(exc, args)}", file=sys.stderr)
        sys.exit(2)
    if mode == "hydra":  # --help, --version ...: Hydra's own
        return None
    pipeline = "sweep" if config_name == "sweep" else "train"
    with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
        for job in jobs:
            try:
                cfg = compose(name, overrides=job)
            except Exception as exc:  # noqa: BLE001 - any composition error becomes one line
                print(f"error: {explain_error(exc, job)}", file=sys.stderr)
                sys.exit(2)
            if "seed" not in cfg or "optim" not in cfg:  # not a training config: composing was the check
                continue
            try:
                check_pipeline(cfg, pipeline)
                if mode == "multirun":
                    validate_keys(cfg)
                    continue
                if on_composed is not None and mode == "run":
                    on_composed(cfg)
                validate(cfg)
            except ConfigError as exc:
                print(f"error: {exc}", file=sys.stderr)
                sys.exit(2)
    return cfg if mode == "run" else None
