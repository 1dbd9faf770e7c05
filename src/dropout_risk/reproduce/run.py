"""Re-run a logged run, or a config file, through the same `train(cfg)` and verify the result.

    reproduce run_id=<id>             fetch config/config.yaml from the run, re-run, compare
    reproduce config=path.yaml        re-run a config file; compared with the logged run that has
                                      the same config (or with run_id=<id> when given too)
    reproduce run_id=<sweep run id>   the sweep's best trial (tag best_run_id); all=true: every trial

A config is data, not code: a file (or a run's artifact) goes through the same structured schema,
`_target_` allow-list and value checks as a normal run, and a config written by a newer schema is
refused. Before training, the data is fingerprinted and compared with the original run's
`data_fingerprint` tag: changed data is refused unless allow_data_change=true. Differences in git
commit and package versions are warned about, one line each.

The comparison covers every final metric of the original run (wall-clock `time/*` excepted), the
outcome (and divergence step) and the sha256 of the final weights. Verdict: `exact` (all
bit-identical), `within_tolerance` (each metric within `tolerance` x max(1, |original|)) or
`mismatch`. The new run is tagged `reproduced_from=<id>` and `reproduction=<verdict>`.

This module is imported by the pipeline before torch/MLflow are: keep heavy imports inside functions.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from dropout_risk.config.saved import is_sweep_config, load_config_file
from dropout_risk.config.validate import validate
from dropout_risk.console import fit
from dropout_risk.errors import ReproduceError
from dropout_risk.reproduce.checks import check_data, check_device, device_warnings, provenance_warnings
from dropout_risk.reproduce.original import (
    _is_sweep_parent,
    find_original,
    get_run,
    open_store,
    run_config,
    sweep_trials,
)
from dropout_risk.reproduce.request import check_request
from dropout_risk.reproduce.verdict import (
    NOT_COMPARED,
    Reproduction,
    Row,
    _metric_rank,
    _overall,
    compare_runs,
    format_table,
    summary_line,
)
from dropout_risk.tracking.names import (
    REPORT_ARTIFACT,
    TAG_BEST_RUN_ID,
    TAG_OUTCOME,
    TAG_REPRODUCED_FROM,
    TAG_TRIAL,
    TAG_WEIGHTS,
)


def _artifact_location(req: DictConfig, cfg: DictConfig) -> str | None:
    from dropout_risk.tracking.store import default_artifact_root, resolve_uri

    if req.tracking.artifact_location:
        return str(req.tracking.artifact_location)
    if resolve_uri(str(cfg.tracking.uri)) == resolve_uri(str(req.tracking.uri)):
        return cfg.tracking.artifact_location  # the original's own store
    return default_artifact_root(str(req.tracking.uri))


def reproduce_one(cfg: DictConfig, original, req: DictConfig, client, source: str,
                  warn: Callable[[str], None] = print) -> Reproduction:
    """Re-run `cfg` through train() and compare with `original` (an MLflow run, or None)."""
    from dropout_risk.tracking.names import run_name
    from dropout_risk.tracking.provenance import provenance_tags
    from dropout_risk.training.train import train

    cfg = copy.deepcopy(cfg)
    OmegaConf.set_struct(cfg, True)
    if req.data_path:
        cfg.data.path = str(req.data_path)
    location = _artifact_location(req, cfg)
    cfg.tracking.uri = str(req.tracking.uri)
    cfg.tracking.artifact_location = location
    base_name = original.info.run_name if original is not None else run_name(cfg)
    cfg.tracking.run_name = f"repro-{base_name}"
    validate(cfg)

    check_device(cfg)
    warnings = check_data(cfg, original, source, bool(req.allow_data_change))
    orig_id = original.info.run_id if original is not None else None
    if original is not None:
        warnings += provenance_warnings(original.data.tags, provenance_tags(), orig_id)
        warnings += device_warnings(cfg, original.data.tags, orig_id)
    for line in warnings:
        warn(line)

    tags = {TAG_REPRODUCED_FROM: orig_id} if orig_id else {"reproduced_from_config": source[:500]}
    tolerance = float(req.tolerance)
    if original is not None and original.data.tags.get("engine") == "population":
        # A population member re-runs as a population of one: the same initialisation, data order and
        # per-member lr, but K = 1 runs torch's plain matmul kernels where K >= 2 ran the batched
        # ones, so the numbers agree to rounding, not bit for bit (docs/design-changes.md, issue 15).
        from dropout_risk.training.train_population import MemberSpec, train_population

        tolerance = max(tolerance, float(req.population_tolerance))
        [result] = train_population([MemberSpec(cfg, tags=tags)])
        if isinstance(result, Exception):
            raise result
    else:
        result = train(cfg, tags=tags)
    new = client.get_run(result.run_id)
    if original is None:
        rep = Reproduction(None, result.run_id, "no_original",
                           [Row(k, None, v, None, "-") for k, v in sorted(new.data.metrics.items(), key=lambda kv: _metric_rank(kv[0]))
                            if not k.startswith(NOT_COMPARED)], warnings, label=source)
    else:
        rows, verdict = compare_runs(original.data.metrics, new.data.metrics, original.data.tags, new.data.tags,
                                     tolerance)
        recorded = original.data.tags.get(TAG_WEIGHTS)
        rep = Reproduction(orig_id, result.run_id, verdict, rows, warnings,
                           label=f"run {orig_id} ({original.info.run_name})",
                           weights_identical=None if not recorded else recorded == result.weights_sha256)
    client.set_tag(result.run_id, "reproduction", rep.verdict)
    report = "\n".join([f"reproduction of {rep.label}", *[f"warning: {w}" for w in warnings],
                        format_table(rep.rows), summary_line(rep)])
    client.log_text(result.run_id, report + "\n", REPORT_ARTIFACT)
    return rep


def reproduce(req: DictConfig, echo: Callable[[str], None] = print,
              warn: Callable[[str], None] | None = None) -> list[Reproduction]:
    """Everything the request asks for; prints as it goes. Raises ReproduceError for bad input."""
    warn = warn or (lambda msg: echo(fit(f"warning: {msg}")))
    check_request(req)
    uri = str(req.tracking.uri)
    if req.config:
        cfg = load_config_file(req.config)
        if is_sweep_config(cfg):
            raise ReproduceError(f"config={req.config} is a sweep's config: re-run the sweep with `python "
                                 f"pipelines/sweep.py --config-path <absolute folder> --config-name <file name> "
                                 "sweep.study=<new name>`, or reproduce its trials with run_id=<sweep run id> all=true")
        client = open_store(uri, must_exist=bool(req.run_id))
        if req.run_id:
            original = get_run(client, str(req.run_id), uri)
            if _is_sweep_parent(client, original):
                raise ReproduceError(f"run_id={req.run_id} is a sweep: with config=, pass the run id of one trial")
        else:
            original = find_original(client, cfg, ignore_path=bool(req.data_path))
        _check_finished(original)
        echo(fit(f"re-running {req.config}" + (f", compared with run {original.info.run_id} "
                                               f"({original.info.run_name})" if original is not None else "")))
        return [_one(cfg, original, req, client, f"data.path of config file {req.config}", echo, warn)]

    client = open_store(uri)
    run = get_run(client, str(req.run_id), uri)
    if not _is_sweep_parent(client, run):
        _check_finished(run)
        cfg = run_config(client, run)
        echo(fit(f"re-running run {run.info.run_id} ({run.info.run_name})"))
        return [_one(cfg, run, req, client, f"data.path of run {run.info.run_id}", echo, warn)]

    trials = [t for t in sweep_trials(client, run) if t.info.status == "FINISHED"]
    if not req.all:
        best = run.data.tags.get(TAG_BEST_RUN_ID)
        if not best:
            raise ReproduceError(f"sweep {run.info.run_id} has no best trial (tag best_run_id: no trial converged, or "
                                 "the sweep has not reported yet); pass all=true to reproduce every trial")
        trial = get_run(client, best, uri)
        echo(fit(f"sweep {run.info.run_id} ({run.info.run_name}): re-running its best trial "
                 f"{trial.data.tags.get(TAG_TRIAL, '?')} ({trial.info.run_name}) alone"))
        return [_one(run_config(client, trial), trial, req, client, f"data.path of run {best}", echo, warn)]
    if not trials:
        raise ReproduceError(f"sweep {run.info.run_id} has no finished trials to reproduce")
    echo(fit(f"sweep {run.info.run_id} ({run.info.run_name}): re-running its {len(trials)} finished trial(s) "
             "one by one"))
    warn = _once(warn)  # the trials share their commit, versions and data: say it once
    reps = []
    for t in trials:
        outcome = t.data.tags.get(TAG_OUTCOME)
        label = f"trial {t.data.tags.get(TAG_TRIAL, '?')} ({t.info.run_name})"
        if outcome in ("pruned", "failed"):
            echo(fit(f"{label}: skipped, {outcome} "
                     + ("(the pruner's decision depends on the other trials; alone it would train to the end)"
                        if outcome == "pruned" else "(no result to compare)")))
            continue
        reps.append(_one(run_config(client, t), t, req, client, f"data.path of run {t.info.run_id}", echo, warn,
                         table=False, label=label))
    echo("")
    echo(trials_table(reps, trials))
    n_bad = sum(not r.ok for r in reps)
    echo(f"verdict: {'mismatch' if n_bad else _overall(reps)} ({len(reps) - n_bad}/{len(reps)} trials reproduced)")
    return reps


def _once(warn: Callable[[str], None]) -> Callable[[str], None]:
    seen: set[str] = set()

    def once(msg: str) -> None:
        key = re.sub(r"\brun [0-9a-zA-Z_-]+", "run", msg)
        if key not in seen:
            seen.add(key)
            warn(msg)

    return once


def _check_finished(run) -> None:
    if run is not None and run.info.status != "FINISHED":
        raise ReproduceError(f"run {run.info.run_id} ended {run.info.status}: it has no complete result to compare "
                             "against; reproduce a FINISHED run")


def _one(cfg, original, req, client, source, echo, warn, table: bool = True,
         label: str | None = None) -> Reproduction:
    """Reproduce one run and print it: its table and verdict (`table`), or, for one trial of a
    sweep, `<label>: <verdict>` and the rows that mismatch; then both run ids."""
    rep = reproduce_one(cfg, original, req, client, source, warn)
    if label is not None:
        rep.label = label
    if table:
        echo("")
        echo(fit(format_table(rep.rows)))
        echo(fit(summary_line(rep)))
    else:
        echo(fit(f"{rep.label}: {rep.verdict}"))
        bad = [r for r in rep.rows if r.verdict == "mismatch"]
        if bad:
            echo(fit(format_table(bad)))
    if rep.original_run_id:
        echo(f"reproduced_from: {rep.original_run_id}")
    echo(f"run_id: {rep.run_id}")
    return rep


def trials_table(reps: list[Reproduction], trials: list) -> str:
    """The reproduced trials of a sweep, one row each: trial number (Optuna's, the `trial` tag),
    run name, largest difference, weights, verdict; both run ids of each are on the lines above
    the table (`reproduced_from:`, `run_id:`)."""
    runs = {t.info.run_id: t for t in trials}
    cells = [("trial", "run name", "largest difference", "weights", "verdict")]
    for r in reps:
        t = runs.get(r.original_run_id)
        weights = {True: "identical", False: "differ", None: "-"}[r.weights_identical]
        cells.append((t.data.tags.get(TAG_TRIAL, "?") if t else "?", t.info.run_name if t else "?",
                      f"{r.worst():.3g}", weights, r.verdict))
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    return fit("\n".join("  ".join(f"{v:<{w}}" for v, w in zip(c, widths, strict=True)).rstrip() for c in cells))


def run_reproduce(req: DictConfig, echo: Callable[[str], None] = print,
                  warn: Callable[[str], None] | None = None) -> int:
    """The pipeline's job: 0 when every reproduction is exact or within tolerance, 1 on a mismatch."""
    import sys

    def to_stderr(msg: str) -> None:
        print(fit(f"warning: {msg}"), file=sys.stderr, flush=True)

    reps = reproduce(req, echo=echo, warn=warn or to_stderr)
    return 0 if all(r.ok for r in reps) else 1
