"""What the pipelines share: the Hydra overrides of this invocation, one-line errors, and
the printed summary."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from dropout_risk.data.base import DataError
from dropout_risk.errors import ConfigError

# Errors a user fixes by changing the command line or the input file: one line, exit 2.
# (ConfigError covers SweepError and TrackingError.)
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, FileNotFoundError)


def hydra_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ValueError, ImportError):  # not running under @hydra.main
        return []


def freeze_imports() -> None:
    """gc.freeze() once the heavy modules are imported: they stay for the whole process anyway,
    and out of the collector's way every collection is cheaper and the interpreter's exit takes
    0.2 s instead of 1.5 s with torch + Lightning loaded (measured)."""
    import gc

    gc.freeze()


def run_cli(job: Callable[[], int | None]) -> None:
    """Run `job`; turn user errors into `error: <one line>` and exit code 2. A non-zero int
    returned by the job becomes the exit code (returning normally keeps Hydra multiruns going)."""
    try:
        code = job()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the run was closed as KILLED", file=sys.stderr)
        sys.exit(130)
    if code:
        sys.exit(code)


def fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"


def metrics_table(metrics: dict[str, float], splits: tuple[str, ...] = ("val", "test")) -> str:
    """Rows = metric names, columns = splits."""
    names: list[str] = []
    for key in metrics:
        split, _, metric = key.partition("/")
        if split in splits and metric not in names:
            names.append(metric)
    width = max(len(n) for n in names) if names else 6
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{s:>10}" for s in splits)]
    for n in names:
        cells = [fmt(metrics[f"{s}/{n}"]) if f"{s}/{n}" in metrics else "" for s in splits]
        lines.append(f"{n:<{width}}  " + "  ".join(f"{c:>10}" for c in cells))
    return "\n".join(lines)


def print_run_summary(result, cfg: DictConfig) -> None:
    from dropout_risk.tracking import runs_url, ui_command

    m = result.metrics
    print()
    print(f"run: {result.run_name}   outcome: {result.outcome}"
          + (f" at step {result.diverged_at_step}" if result.diverged_at_step else "")
          + f"   fit: {m['time/fit_s']:.2f} s, {int(m['epochs_completed'])} epochs")
    print(metrics_table(m))
    if "bayes/log_loss_bayes" in m:
        print(f"Bayes-optimal (p_true) on test: log loss {fmt(m['bayes/log_loss_bayes'])}, "
              f"AUROC {fmt(m['bayes/auroc_bayes'])}")
    print(f"run_id: {result.run_id}")
    print(f"MLflow UI: {ui_command(cfg.tracking.uri)}")
    print(f"  then open {runs_url(result.experiment_id)}")


def print_sweep_summary(result, cfg: DictConfig) -> None:
    from dropout_risk.tracking import runs_url, ui_command

    frame = result.summary.drop(columns=["run_id"])
    print()
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    lo, hi = result.boundary
    print()
    if result.sharpness is not None:
        print(f"sharpness at init lambda_max = {result.sharpness:.4g}; plain-GD threshold 2/lambda_max = "
              f"{result.gd_threshold:.4g} (a reference for plain gradient descent, not for adaptive optimisers)")
    print(f"observed boundary: largest converged lr = {fmt(lo) if lo else 'none'}, "
          f"smallest diverged lr = {fmt(hi) if hi else 'none'}"
          + (f" ({hi / result.gd_threshold:.3g} x 2/lambda_max)" if hi and result.gd_threshold else ""))
    if result.best_trial is not None:
        best = result.summary[result.summary.trial == result.best_trial].iloc[0]
        print(f"best trial: {result.best_trial} (lr {best.lr:.4g}, val log loss {best.val_loss:.4f})")
    print(f"sweep_run_id: {result.parent_run_id}")
    print(f"study: {result.study}")
    print(f"MLflow UI: {ui_command(cfg.tracking.uri)}")
    print(f"  then open {runs_url(result.experiment_id)}")


def print_pitfall_summary(result, cfg: DictConfig) -> None:
    """The two runs side by side, the computed explanation, where the comparison is."""
    from dropout_risk.pitfalls import key_table
    from dropout_risk.tracking import runs_url

    print()
    print(f"pitfall: {result.name}")
    print(key_table(result))
    print()
    print("what the numbers show:")
    for line in result.explanation:
        print(f"  - {line}")
    print()
    print(f"pitfall run_id: {result.pitfall_run_id}")
    print(f"healthy run_id: {result.healthy_run_id}  (each tagged counterpart=<the other>)")
    comparison = result.comparison
    print(f"comparison: {comparison.out_dir} (reliability_grid.png, loss_curves.png, comparison.md, explanation.md)")
    if comparison.comparison_run_id:
        print(f"comparison run_id: {comparison.comparison_run_id}")
        print(f"  in the MLflow UI: {runs_url(comparison.comparison_experiment_id)}")


CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def _group_options(group: str) -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    return [o for o in loader.get_group_options(group) if not o.endswith("_schema")]


def _explain(exc: BaseException, overrides: list[str]) -> str:
    """One line for a Hydra/OmegaConf composition error: the key, the problem, the fix."""
    import difflib
    import re

    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause: BaseException = exc
    while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if isinstance(exc, MissingConfigException) or "Could not find" in str(exc):
        found = re.search(r"Could not find '([^']+)'", str(exc))
        group = found.group(1).rsplit("/", 1)[0] if found else ""
        choice = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == group), "?")
        opts = _group_options(group) if group else []
        return f"{group}={choice} is not an option: choose one of {', '.join(opts)} (e.g. {group}={opts[0] if opts else '...'})"
    if isinstance(cause, ConfigKeyError | ConfigAttributeError):
        full_key = getattr(cause, "full_key", "") or ""
        parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
        known: list[str] = []
        node = getattr(cause, "parent_node", None)
        if node is not None:
            known = [str(k) for k in node.keys() if not str(k).startswith("_")]
        close = difflib.get_close_matches(full_key.rsplit(".", 1)[-1], known, n=1)
        hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?" if close else (
            f"keys here: {', '.join(known)}" if known else "check the spelling against conf/")
        return f"unknown config key '{full_key}': {hint}"
    if isinstance(cause, OmegaConfBaseException):
        msg = str(cause).splitlines()[0]
        key = getattr(cause, "full_key", "")
        return f"{key}: {msg}" if key else msg
    return str(exc).splitlines()[0]


def preflight(config_name: str = "config", argv: list[str] | None = None,
              on_composed: Callable[[DictConfig], None] | None = None) -> None:
    """Compose and check the config once before Hydra does, so that a bad override ends in one
    line (`error: ...`, exit 2) within a second, instead of Hydra's multi-line report or an error
    after torch/Lightning/MLflow have loaded. Flags (--cfg, -m, --config-path ...) are left to Hydra.
    `on_composed(cfg)` runs once the config composed and names the right pipeline, before the
    value checks (which import torch for the `_target_` allow-list): the sweep starts its worker
    processes there, so their imports overlap everything after."""
    from hydra import compose, initialize_config_dir

    from dropout_risk.config import check_pipeline, validate

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a.startswith("-") for a in args):
        return
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        try:
            cfg = compose(config_name, overrides=args)
        except Exception as exc:  # noqa: BLE001 - any composition error becomes one line
            print(f"error: {_explain(exc, args)}", file=sys.stderr)
            sys.exit(2)
    if "seed" in cfg and "optim" in cfg:  # a training config: value checks too
        try:
            check_pipeline(cfg, "sweep" if config_name == "sweep" else "train")
            if on_composed is not None:
                on_composed(cfg)
            validate(cfg)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
