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

import ast
import copy
import json
import math
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dropout_risk.config import (
    SCHEMA_VERSION,
    AdamWConfig,
    Config,
    ConfigError,
    OptimConfig,
    SGDConfig,
    check_targets,
    to_container,
    validate,
)

CONFIG_ARTIFACT = "config/config.yaml"
REPORT_ARTIFACT = "reproduction/report.txt"
NOT_COMPARED = ("time/",)  # wall-clock times differ run to run by nature
_RUN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")
_TRIAL_NAME = re.compile(r"^(scan|refine)-\d+-lr")
_OPTIM_NODES = {"torch.optim.AdamW": AdamWConfig, "torch.optim.SGD": SGDConfig}
_QUOTED_KEYS = ("run_id", "config", "data_path")  # values Hydra must not parse (ids, paths)


class ReproduceError(ConfigError):
    """Nothing can be (or may be) re-run. One line: what is wrong and how to fix it."""


# --- the request (conf/reproduce.yaml, schema registered by config.register_configs) ---------------


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


def normalize_argv(args: list[str]) -> list[str]:
    """Quote run ids and paths so Hydra keeps them as strings (an id like `123e4` would be a float)."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in _QUOTED_KEYS and value not in ("", "null") and value[0] not in "'\"":
            value = value.replace("\\", "\\\\").replace("'", "\\'")
            arg = f"{key}='{value}'"
        out.append(arg)
    return out


def check_request(req: DictConfig) -> None:
    """The request's own checks, before anything heavy is imported."""
    if not req.run_id and not req.config:
        raise ReproduceError("nothing to reproduce: pass run_id=<id> (a logged run or sweep) or "
                             "config=path/to/config.yaml")
    if req.run_id and not _RUN_ID.match(str(req.run_id)):
        raise ReproduceError(f"run_id={req.run_id!r} is not an MLflow run id: pass the id a run printed "
                             "(`run_id: <32 hex characters>`)")
    if not (req.tolerance >= 0 and math.isfinite(req.tolerance)):
        raise ReproduceError(f"tolerance={req.tolerance} must be >= 0 (0: exact), e.g. tolerance=1e-6")
    if req.config and not Path(req.config).is_file():
        raise ReproduceError(f"config={req.config}: no such file; pass the path of a saved config.yaml "
                             f"(a run's {CONFIG_ARTIFACT} artifact)")


# --- config files: the same schema, allow-list and checks as a normal run ----------------------------


def load_config_file(path: str | Path) -> DictConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReproduceError(f"config={path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    return load_config_text(text, f"config file {path}")


def load_config_text(text: str, source: str) -> DictConfig:
    """A saved config as the training schema sees it. Refuses (one line): not YAML, not a mapping,
    a newer schema_version, a `_target_` outside the allow-list, unknown keys, wrong types,
    missing required keys and values `validate` rejects."""
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    from dropout_risk.cli import _explain

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ReproduceError(f"{source} is not valid YAML{at}: fix the file or use the run's {CONFIG_ARTIFACT}") from None
    if not isinstance(raw, dict):
        raise ReproduceError(f"{source} is not a dropout-risk config: expected keys such as seed, data, optim, trainer")
    raw = dict(raw)
    raw.pop("defaults", None)  # names the schema for plain Hydra; applied here directly
    version = raw.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ReproduceError(f"{source}: schema_version={version!r} must be an integer (this dropout-risk writes {SCHEMA_VERSION})")
    if version > SCHEMA_VERSION:  # before the key checks: a newer schema may have keys we do not know
        raise ReproduceError(f"{source}: schema_version={version} was written by a newer dropout-risk (this one reads "
                             f"<= {SCHEMA_VERSION}); upgrade dropout-risk to re-run it")
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
        raise ReproduceError(f"{source}: {_explain(exc, [])}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ReproduceError(f"{source} lacks {', '.join(missing)}: it is not a complete saved config; use a run's "
                             f"{CONFIG_ARTIFACT}")
    try:
        validate(cfg)
    except ConfigError as exc:
        raise ReproduceError(f"{source}: {exc}") from None
    return cfg  # type: ignore[return-value]


def is_sweep_config(cfg: DictConfig) -> bool:
    """A sweep's own config (not one of its trials': those are named scan-NNN-lr... / refine-...)."""
    return cfg.get("sweep") is not None and not _TRIAL_NAME.match(str(cfg.tracking.run_name or ""))


# --- comparing two runs ------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    original: Any
    rerun: Any
    difference: float | None
    verdict: str  # exact | within_tolerance | mismatch | differs | missing | not recorded


@dataclass
class Reproduction:
    original_run_id: str | None
    run_id: str
    verdict: str  # exact | within_tolerance | mismatch | no_original
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)
    label: str = ""  # what was reproduced, e.g. "run 3fa2... (sgd-lr0.3-h16x8-s0)"
    weights_identical: bool | None = None

    @property
    def ok(self) -> bool:
        return self.verdict in ("exact", "within_tolerance", "no_original")

    def worst(self) -> float:
        diffs = [abs(r.difference) for r in self.rows if r.difference is not None and math.isfinite(r.difference)]
        return max(diffs, default=0.0)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _metric_rank(key: str) -> tuple:
    split = key.split("/", 1)[0] if "/" in key else ""
    return ({"val": 0, "test": 1, "bayes": 2, "train": 3}.get(split, 4), key)


def compare_runs(original: dict[str, float], rerun: dict[str, float], original_tags: dict[str, str],
                 rerun_tags: dict[str, str], tolerance: float = 0.0) -> tuple[list[Row], str]:
    """Rows (every final metric, the outcome, the weight hash) and the overall verdict."""
    rows: list[Row] = []
    keys = sorted((set(original) | set(rerun)) - {k for k in set(original) | set(rerun) if k.startswith(NOT_COMPARED)},
                  key=_metric_rank)
    for key in keys:
        a, b = original.get(key), rerun.get(key)
        if a is None or b is None:
            rows.append(Row(key, a, b, None, "mismatch"))
            continue
        diff = b - a if math.isfinite(a) and math.isfinite(b) else (0.0 if _same(a, b) else math.nan)
        if _same(a, b):
            verdict = "exact"
        elif math.isfinite(diff) and abs(diff) <= tolerance * max(1.0, abs(a)):
            verdict = "within_tolerance"
        else:
            verdict = "mismatch"
        rows.append(Row(key, a, b, diff, verdict))
    for tag in ("outcome", "diverged_at_step"):
        a, b = original_tags.get(tag), rerun_tags.get(tag)
        if a is not None or b is not None:
            rows.append(Row(tag, a, b, None, "exact" if a == b else "mismatch"))
    a, b = original_tags.get("weights_sha256"), rerun_tags.get("weights_sha256")
    if not a:
        rows.append(Row("weights_sha256", "not recorded", b, None, "not recorded"))
    else:
        rows.append(Row("weights_sha256", a, b, None, "exact" if a == b else ("mismatch" if tolerance == 0 else "differs")))
    verdicts = {r.verdict for r in rows}
    if "mismatch" in verdicts:
        overall = "mismatch"
    elif verdicts <= {"exact", "not recorded"}:
        overall = "exact"
    else:
        overall = "within_tolerance"
    return rows, overall


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.10g}"
    text = str(value)
    return text[:12] + "…" if len(text) > 13 else text


def format_table(rows: list[Row]) -> str:
    header = ("metric", "original", "re-run", "difference", "verdict")
    cells = [header] + [(r.name, _cell(r.original), _cell(r.rerun),
                         "-" if r.difference is None else ("0" if r.difference == 0 else f"{r.difference:.3g}"),
                         r.verdict) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    return "\n".join(f"{c[0]:<{widths[0]}}  {c[1]:>{widths[1]}}  {c[2]:>{widths[2]}}  {c[3]:>{widths[3]}}  {c[4]}"
                     for c in cells)


def summary_line(rep: Reproduction) -> str:
    if rep.verdict == "no_original":
        return "verdict: no_original (no logged run has this config: nothing to compare against)"
    metrics = [r for r in rep.rows if r.name not in ("outcome", "diverged_at_step", "weights_sha256")]
    n_exact = sum(r.verdict == "exact" for r in metrics)
    bad = [r.name for r in rep.rows if r.verdict == "mismatch"]
    weights = {True: "weights identical", False: "weights differ", None: "weights not recorded by the original"}
    text = f"verdict: {rep.verdict} ({n_exact}/{len(metrics)} metrics bit-identical, {weights[rep.weights_identical]}"
    if rep.verdict == "within_tolerance":
        text += f", largest difference {rep.worst():.3g}"
    if bad:
        text += f"; mismatch in {', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}"
    return text + ")"


# --- provenance: data fingerprint, git, package versions -----------------------------------------------


def parse_fingerprint(tag: str | None) -> dict | None:
    """The `data_fingerprint` tag: JSON (current) or a Python dict literal (runs before JSON)."""
    if not tag:
        return None
    try:
        value = json.loads(tag)
    except ValueError:
        try:
            value = ast.literal_eval(tag)
        except (ValueError, SyntaxError):
            return None
    return value if isinstance(value, dict) else None


def data_changes(original: dict, now: dict) -> tuple[list[str], list[str]]:
    """(changes that alter the data or split, harmless ones such as the file's path)."""
    changed, moved = [], []
    for key in sorted(set(original) | set(now)):
        a, b = original.get(key), now.get(key)
        if str(a) == str(b):
            continue
        if key == "path":
            moved.append(f"path {a} -> {b}")
        else:
            short = lambda v: str(v)[:12] + "…" if len(str(v)) > 13 else str(v)  # noqa: E731
            changed.append(f"{key} {short(a)} -> {short(b)}")
    return changed, moved


def provenance_warnings(original_tags: dict[str, str], now: dict[str, str], run_id: str) -> list[str]:
    """One line for the code (git commit, uncommitted changes), one for package versions."""
    out = []
    a, b = original_tags.get("git_commit"), now.get("git_commit")
    was_dirty, is_dirty = original_tags.get("git_dirty") == "true", now.get("git_dirty") == "true"
    edits = " (with uncommitted changes)"
    if a and b and a != b:
        out.append(f"git commit differs: run {run_id} ran at {a[:12]}{edits if was_dirty else ''}, "
                   f"this re-run is at {b[:12]}{edits if is_dirty else ''}")
    elif was_dirty and is_dirty:
        da, db = original_tags.get("git_diff_sha256"), now.get("git_diff_sha256")
        if not (da and da == db):
            out.append(f"uncommitted changes differ: run {run_id} and this re-run both ran at {str(a)[:12]} with "
                       "uncommitted changes, " + ("and they are not the same (git diff hash)" if da and db
                                                  else "and the run's were not recorded: the code may differ"))
    elif was_dirty:
        out.append(f"run {run_id} ran at {str(a)[:12]} with uncommitted changes; this re-run is the clean commit")
    elif is_dirty:
        out.append(f"this re-run has uncommitted changes on top of {str(b)[:12]}, the commit run {run_id} ran at")
    versions = [f"{k[len('version.'):]} {original_tags[k]} -> {now.get(k, 'absent')}"
                for k in sorted(original_tags) if k.startswith("version.") and original_tags[k] != now.get(k)]
    if versions:
        out.append(f"package versions differ from run {run_id}: {', '.join(versions)}")
    return out


def check_device(cfg: DictConfig) -> None:
    if cfg.trainer.accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ReproduceError(f"the config trains on trainer.accelerator={cfg.trainer.accelerator} and this machine has "
                                 "no CUDA device: reproduce it on a machine with a GPU (a CPU re-run gives other numbers)")


def device_warnings(cfg: DictConfig, original_tags: dict[str, str], run_id: str) -> list[str]:
    """One line when the device or the torch thread count the run used differs from this re-run's."""
    from dropout_risk.train import device_tags

    now = device_tags(cfg)
    if cfg.trainer.num_threads > 0:
        now["torch_threads"] = str(cfg.trainer.num_threads)  # train() sets it before training
    diffs = [f"{key} {original_tags[key]} -> {now[key]}" for key in ("device", "torch_threads")
             if key in original_tags and original_tags[key] != now[key]]
    return [f"hardware differs from run {run_id}: {', '.join(diffs)}"] if diffs else []


# --- the store ------------------------------------------------------------------------------------------


def open_store(uri: str, must_exist: bool = True):
    from mlflow import MlflowClient

    from dropout_risk.tracking import check_tracking, resolve_uri

    check_tracking(uri)
    prefix = "sqlite:///"
    if must_exist and uri.startswith(prefix) and not Path(uri[len(prefix):]).exists():
        raise ReproduceError(f"tracking.uri={uri}: no MLflow store there; pass tracking.uri=<the store the run was "
                             "logged to>, e.g. tracking.uri=sqlite:///mlruns/mlflow.db")
    return MlflowClient(tracking_uri=resolve_uri(uri))


def get_run(client, run_id: str, uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
            raise ReproduceError(f"run_id={run_id} is not in {uri}: check the id (the `run_id:` line a run "
                                 "printed) or pass tracking.uri=<the store it was logged to>") from None
        raise


def run_config(client, run) -> DictConfig:
    """The run's config artifact, through the schema and the allow-list."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
            text = Path(path).read_text(encoding="utf-8")
        except Exception:  # noqa: BLE001 - absent artifact: MlflowException or OSError by store
            raise ReproduceError(f"run {run_id} ({run.info.run_name}) has no {CONFIG_ARTIFACT} artifact: it was not "
                                 "logged by dropout-risk's train(), so there is no config to re-run") from None
    return load_config_text(text, f"the {CONFIG_ARTIFACT} of run {run_id}")


def _is_sweep_parent(client, run) -> bool:
    tags = run.data.tags
    return "sweep_kind" in tags or "best_run_id" in tags or (
        tags.get("sweep_id") == run.info.run_id and "trial" not in tags)


def sweep_trials(client, parent) -> list:
    runs = client.search_runs([parent.info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=5000)
    return sorted(runs, key=lambda r: int(r.data.tags.get("trial", "1000000")))


def _identity(params: dict[str, str], ignore_path: bool) -> dict[str, str]:
    """What must agree for two runs to have run the same config (tracking and tags do not count)."""
    return {k: v for k, v in params.items()
            if not k.startswith(("tracking.", "tags.")) and not (ignore_path and k == "data.path")}


def find_original(client, cfg: DictConfig, ignore_path: bool = False):
    """The logged run whose params are this config (the oldest, preferring non-reproductions)."""
    from dropout_risk.tracking import flatten

    exp = client.get_experiment_by_name(str(cfg.tracking.experiment))
    if exp is None:
        return None
    want = _identity(flatten(to_container(cfg)), ignore_path)
    runs = client.search_runs([exp.experiment_id], f"params.seed = '{cfg.seed}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"], max_results=5000)
    matches = [r for r in runs if "sweep_kind" not in r.data.tags and _identity(r.data.params, ignore_path) == want]
    matches.sort(key=lambda r: "reproduced_from" in r.data.tags)
    return matches[0] if matches else None


# --- one reproduction ------------------------------------------------------------------------------------


def _artifact_location(req: DictConfig, cfg: DictConfig) -> str | None:
    from dropout_risk.tracking import resolve_uri

    if req.tracking.artifact_location:
        return str(req.tracking.artifact_location)
    if resolve_uri(str(cfg.tracking.uri)) == resolve_uri(str(req.tracking.uri)):
        return cfg.tracking.artifact_location  # the original's own store
    prefix = "sqlite:///"
    if req.tracking.uri.startswith(prefix):
        return str(Path(req.tracking.uri[len(prefix):]).parent / "artifacts")
    return None


def check_data(cfg: DictConfig, original, source: str, allow_change: bool) -> list[str]:
    """Fingerprint the data the re-run will use; compare with the original run's. Returns warnings."""
    from dropout_risk.data.loaders import load_data
    from dropout_risk.data.module import StudentDataModule

    d = cfg.data
    if d.kind in ("csv", "uci_dropout") and d.path and not Path(d.path).is_file():
        raise ReproduceError(f"data file {d.path} ({source}) does not exist: put it back, or pass "
                             "data_path=/where/it/is.csv (its sha256 is checked against the run's)")
    if original is None:
        return []
    recorded = parse_fingerprint(original.data.tags.get("data_fingerprint"))
    rid = original.info.run_id
    if recorded is None:
        return [f"run {rid} recorded no data fingerprint: the data cannot be checked"]
    now = StudentDataModule(load_data(d, cfg.seed), d, cfg.seed).fingerprint()
    changed, moved = data_changes(recorded, now)
    out = [f"data file moved since run {rid}: {'; '.join(moved)} (same content)"] if moved and not changed else []
    if changed:
        what = f"data {d.path}" if d.kind != "cohort" else f"cohort data (n_students={d.n_students}, seed={cfg.seed})"
        msg = f"{what} differs from what run {rid} trained on: {', '.join(changed)}"
        if not allow_change:
            raise ReproduceError(f"{msg}; refusing to re-run on different data: restore the data, or pass "
                                 "allow_data_change=true to re-run anyway")
        out.append(msg + " (allow_data_change=true: re-running anyway)")
    return out


def reproduce_one(cfg: DictConfig, original, req: DictConfig, client, source: str,
                  warn: Callable[[str], None] = print) -> Reproduction:
    """Re-run `cfg` through train() and compare with `original` (an MLflow run, or None)."""
    from dropout_risk.tracking import provenance_tags
    from dropout_risk.train import run_name, train

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

    tags = {"reproduced_from": orig_id} if orig_id else {"reproduced_from_config": source[:500]}
    result = train(cfg, tags=tags)
    new = client.get_run(result.run_id)
    if original is None:
        rep = Reproduction(None, result.run_id, "no_original",
                           [Row(k, None, v, None, "-") for k, v in sorted(new.data.metrics.items(), key=lambda kv: _metric_rank(kv[0]))
                            if not k.startswith(NOT_COMPARED)], warnings, label=source)
    else:
        rows, verdict = compare_runs(original.data.metrics, new.data.metrics, original.data.tags, new.data.tags,
                                     float(req.tolerance))
        recorded = original.data.tags.get("weights_sha256")
        rep = Reproduction(orig_id, result.run_id, verdict, rows, warnings,
                           label=f"run {orig_id} ({original.info.run_name})",
                           weights_identical=None if not recorded else recorded == result.weights_sha256)
    client.set_tag(result.run_id, "reproduction", rep.verdict)
    report = "\n".join([f"reproduction of {rep.label}", *[f"warning: {w}" for w in warnings],
                        format_table(rep.rows), summary_line(rep)])
    client.log_text(result.run_id, report + "\n", REPORT_ARTIFACT)
    return rep


# --- the whole request --------------------------------------------------------------------------------


def reproduce(req: DictConfig, echo: Callable[[str], None] = print,
              warn: Callable[[str], None] | None = None) -> list[Reproduction]:
    """Everything the request asks for; prints as it goes. Raises ReproduceError for bad input."""
    warn = warn or (lambda msg: echo(f"warning: {msg}"))
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
        echo(f"re-running {req.config}" + (f", compared with run {original.info.run_id} ({original.info.run_name})"
                                          if original is not None else ""))
        return [_one(cfg, original, req, client, f"data.path of config file {req.config}", echo, warn)]

    client = open_store(uri)
    run = get_run(client, str(req.run_id), uri)
    if not _is_sweep_parent(client, run):
        _check_finished(run)
        cfg = run_config(client, run)
        echo(f"re-running run {run.info.run_id} ({run.info.run_name})")
        return [_one(cfg, run, req, client, f"data.path of run {run.info.run_id}", echo, warn)]

    trials = [t for t in sweep_trials(client, run) if t.info.status == "FINISHED"]
    if not req.all:
        best = run.data.tags.get("best_run_id")
        if not best:
            raise ReproduceError(f"sweep {run.info.run_id} has no best trial (tag best_run_id: no trial converged, or "
                                 "the sweep has not reported yet); pass all=true to reproduce every trial")
        trial = get_run(client, best, uri)
        echo(f"sweep {run.info.run_id} ({run.info.run_name}): re-running its best trial {trial.data.tags.get('trial', '?')} "
             f"({trial.info.run_name}) alone")
        return [_one(run_config(client, trial), trial, req, client, f"data.path of run {best}", echo, warn)]
    if not trials:
        raise ReproduceError(f"sweep {run.info.run_id} has no finished trials to reproduce")
    echo(f"sweep {run.info.run_id} ({run.info.run_name}): re-running its {len(trials)} finished trial(s) one by one")
    warn = _once(warn)  # the trials share their commit, versions and data: say it once
    reps = []
    for t in trials:
        outcome = t.data.tags.get("outcome")
        if outcome in ("pruned", "failed"):
            echo(f"trial {t.data.tags.get('trial', '?')} ({t.info.run_name}): skipped, {outcome} "
                 + ("(the pruner's decision depends on the other trials; alone it would train to the end)"
                    if outcome == "pruned" else "(no result to compare)"))
            continue
        rep = _one(run_config(client, t), t, req, client, f"data.path of run {t.info.run_id}", echo, warn, table=False)
        rep.label = f"trial {t.data.tags.get('trial', '?')} ({t.info.run_name})"
        reps.append(rep)
    echo("")
    echo(sweep_table(reps))
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


def _overall(reps: list[Reproduction]) -> str:
    return "exact" if all(r.verdict == "exact" for r in reps) else "within_tolerance"


def _check_finished(run) -> None:
    if run is not None and run.info.status != "FINISHED":
        raise ReproduceError(f"run {run.info.run_id} ended {run.info.status}: it has no complete result to compare "
                             "against; reproduce a FINISHED run")


def _one(cfg, original, req, client, source, echo, warn, table: bool = True) -> Reproduction:
    rep = reproduce_one(cfg, original, req, client, source, warn)
    if table:
        echo("")
        echo(format_table(rep.rows))
        echo(summary_line(rep))
    else:
        bad = [r for r in rep.rows if r.verdict == "mismatch"]
        if bad:
            echo(f"{rep.label}: mismatch\n{format_table(bad)}")
    if rep.original_run_id:
        echo(f"reproduced_from: {rep.original_run_id}")
    echo(f"run_id: {rep.run_id}")
    return rep


def sweep_table(reps: list[Reproduction]) -> str:
    cells = [("trial", "original run", "re-run", "largest difference", "weights", "verdict")]
    for r in reps:
        weights = {True: "identical", False: "differ", None: "-"}[r.weights_identical]
        cells.append((r.label, str(r.original_run_id), r.run_id, f"{r.worst():.3g}", weights, r.verdict))
    widths = [max(len(c[i]) for c in cells) for i in range(6)]
    return "\n".join("  ".join(f"{v:<{w}}" for v, w in zip(c, widths, strict=True)).rstrip() for c in cells)


def run_reproduce(req: DictConfig, echo: Callable[[str], None] = print,
                  warn: Callable[[str], None] | None = None) -> int:
    """The pipeline's job: 0 when every reproduction is exact or within tolerance, 1 on a mismatch."""
    import sys

    def to_stderr(msg: str) -> None:
        print(f"warning: {msg}", file=sys.stderr, flush=True)

    reps = reproduce(req, echo=echo, warn=warn or to_stderr)
    return 0 if all(r.ok for r in reps) else 1
