"""The seed's pitfalls as runnable experiments (conf/experiment/pitfall_*.yaml).

A train preset trains the pitfall run and then its healthy counterpart (the same config with
`pitfall.counterpart` applied: same seed, data and initialisation); the sweep preset finds both
among its scan trials (the smallest learning rate that diverged, the largest that converged
below it). Either way the two runs are linked (tag `counterpart` = the other run's id, `pitfall`,
`pitfall_role`), compared side by side with `compare.compare` (reliability grid, loss curves,
table, logged as a comparison run) and explained from their numbers: the printed text is
computed from the runs, never canned.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from dropout_risk.compare.run import compare
from dropout_risk.errors import ConfigError
from dropout_risk.pitfalls.explain import EXPLAIN, explain_generic, explain_lr_divergence
from dropout_risk.pitfalls.result import PitfallResult, best_val_epoch
from dropout_risk.tracking.names import (
    CONVERGED,
    TAG_PITFALL,
    TAG_PITFALL_ROLE,
    TRAIN_LOSS,
    VAL_LOG_LOSS,
    run_name,
)
from dropout_risk.tracking.store import client
from dropout_risk.training.train import RunResult, train


def counterpart_config(cfg: DictConfig, pitfall: RunResult) -> tuple[DictConfig, list[str]]:
    """The healthy counterpart's config: `cfg` with `pitfall.counterpart` applied. An override
    may name `{best_val_epoch}`, the pitfall run's epoch of lowest validation loss."""
    best_epoch = best_val_epoch(pitfall)
    overrides = [str(o).format(best_val_epoch=best_epoch) for o in cfg.pitfall.counterpart]
    healthy = copy.deepcopy(cfg)  # keeps the structured schema: a typo'd key or a wrong type fails
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_delete() or override.is_add() or not override.key_or_group or "/" in override.key_or_group:
            raise ConfigError(f"pitfall.counterpart: {override.input_line!r} must be a plain key=value override")
        OmegaConf.update(healthy, override.key_or_group, override.value(), merge=False)
    return healthy, overrides


def run_train_pitfall(cfg: DictConfig, overrides: Sequence[str] = (), echo: Callable[[str], None] = print,
                      out_dir: str | Path | None = None) -> PitfallResult:
    """Train the pitfall run and its healthy counterpart, link, compare and explain them."""
    name = str(cfg.pitfall.name)
    # Each run is trained with pitfall.name=null in its saved config: re-running that config file
    # reproduces that one run, not the pair (the tags say which pitfall it belongs to).
    single = copy.deepcopy(cfg)
    single.pitfall.name = None
    if not cfg.tracking.run_name:
        single.tracking.run_name = f"{name}-pitfall-{run_name(cfg)}"
    echo(f"pitfall {name}: training the pitfall run")
    pitfall = train(single, overrides=list(overrides), tags={TAG_PITFALL: name, TAG_PITFALL_ROLE: "pitfall"})
    healthy_cfg, extra = counterpart_config(single, pitfall)
    if not cfg.tracking.run_name:
        healthy_cfg.tracking.run_name = None  # named from its own config, not the pitfall run's name
        healthy_cfg.tracking.run_name = f"{name}-healthy-{run_name(healthy_cfg)}"
    echo(f"pitfall {name}: training the healthy counterpart ({' '.join(extra)})")
    healthy = train(healthy_cfg, overrides=[*overrides, *extra], tags={TAG_PITFALL: name, TAG_PITFALL_ROLE: "healthy"})
    explanation = EXPLAIN.get(name, explain_generic)(pitfall, healthy)
    store = client(cfg.tracking.uri)
    for result in (pitfall, healthy):  # where validation said to stop, as metrics the UI can sort by
        epoch = best_val_epoch(result)
        store.log_metric(result.run_id, "best_val_epoch", epoch)
        store.log_metric(result.run_id, "val/log_loss_best", result.val_history[epoch - 1][VAL_LOG_LOSS]
                          if result.val_history else math.nan)
    return _link_and_compare(cfg, name, pitfall.run_id, healthy.run_id, explanation, out_dir)


def run_sweep_pitfall(cfg: DictConfig, sweep_result, out_dir: str | Path | None = None) -> PitfallResult:
    """The sweep preset: the smallest scanned learning rate that diverged is the pitfall run, the
    largest that converged below it the healthy counterpart."""
    scan = sweep_result.summary[sweep_result.summary.phase == "scan"].sort_values("lr")
    diverged = scan[scan.outcome == "diverged"]
    if diverged.empty:
        raise ConfigError(f"pitfall {cfg.pitfall.name}: no scanned learning rate diverged; widen the range, "
                          "e.g. sweep.lr_max=1000")
    bad = diverged.iloc[0]
    below = scan[scan.outcome.isin(CONVERGED) & (scan.lr < bad.lr)]
    if below.empty:
        raise ConfigError(f"pitfall {cfg.pitfall.name}: no learning rate below {bad.lr:.3g} converged; lower the "
                          "range, e.g. sweep.lr_min=1e-4")
    good = below.iloc[-1]
    history = client(cfg.tracking.uri).get_metric_history(str(bad.run_id), TRAIN_LOSS)
    losses = [m.value for m in sorted(history, key=lambda m: m.step)]
    explanation = explain_lr_divergence(sweep_result, bad, good, scan, losses)
    return _link_and_compare(cfg, str(cfg.pitfall.name), str(bad.run_id), str(good.run_id), explanation, out_dir)


def _link_and_compare(cfg: DictConfig, name: str, pitfall_id: str, healthy_id: str, explanation: list[str],
                      out_dir: str | Path | None) -> PitfallResult:
    store = client(cfg.tracking.uri)
    for run_id, other, role in ((pitfall_id, healthy_id, "pitfall"), (healthy_id, pitfall_id, "healthy")):
        store.set_tag(run_id, "counterpart", other)
        store.set_tag(run_id, TAG_PITFALL, name)
        store.set_tag(run_id, TAG_PITFALL_ROLE, role)
    out_dir = out_dir or cfg.pitfall.out_dir or f"compare_out/pitfall-{name}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    comparison = compare(runs=[pitfall_id, healthy_id], tracking_uri=cfg.tracking.uri, out_dir=out_dir,
                         artifact_location=cfg.tracking.artifact_location)
    text = f"# Pitfall: {name}\n\n" + "\n".join(f"- {line}" for line in explanation) + "\n"
    (comparison.out_dir / "explanation.md").write_text(text)
    store.log_text(pitfall_id, text, "pitfall/explanation.md")
    if comparison.comparison_run_id:
        store.log_text(comparison.comparison_run_id, text, "explanation.md")
        store.set_tag(comparison.comparison_run_id, TAG_PITFALL, name)
    return PitfallResult(name, pitfall_id, healthy_id, comparison, explanation)
