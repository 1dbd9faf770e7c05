"""Compare tracked runs side by side: reliability diagrams, loss curves and a table of the
params that differ plus every final metric, saved to a folder and logged as one MLflow run.

    compare(runs=[id1, id2, id3], tracking_uri=..., out_dir=...)  # explicit run ids
    compare(sweep=parent_id, ...)                                 # all trials of a sweep
    compare(filter="metrics.`val/auroc` > 0.8", experiment="dropout-risk", ...)

Run data is fetched in bulk: params, tags and final metrics of all runs in one
`search_runs` request (`attributes.run_id IN (...)`), each loss curve of all runs in one
query on SQL stores (one request per run, in parallel, from a tracking server), and the
prediction files in parallel.
Bad input raises CompareError (a ConfigError: the pipelines print it as one `error:` line).
"""

from __future__ import annotations

import csv
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.core.config_store import ConfigStore

from dropout_risk.config import ConfigError

__all__ = [
    "CompareConfig",
    "CompareError",
    "Comparison",
    "RunRecord",
    "compare",
    "compare_from_config",
    "compose_compare_config",
    "differing_params",
    "loss_curves_figure",
    "normalize_argv",
    "preflight",
    "register_compare_config",
    "reliability_grid_figure",
    "run_compare",
]

PREDICTIONS = "predictions/predictions.npz"
CURVES = ("train/loss", "val/loss")
_RUN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")
_FIRST_METRICS = ("loss", "log_loss", "auroc", "auprc", "brier", "ece", "ece_adaptive", "mce", "accuracy")


class CompareError(ConfigError):
    """Nothing (or not what was asked) can be compared. One line: what is wrong and how to fix it."""


# --- the config schema (conf/compare.yaml) ------------------------------------------------------


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


COMPARE_YAML = Path(__file__).resolve().parents[2] / "conf" / "compare.yaml"


def register_compare_config() -> None:
    """Register the schema (`compare_schema`, named in the defaults list of conf/compare.yaml:
    typos fail early) and conf/compare.yaml itself as the config `compare`.

    The compare app composes from the ConfigStore, not from the conf/ folder: conf/ holds the
    training app's config groups `sweep/` and `experiment/`, and Hydra would read the overrides
    `sweep=<id>` and `experiment=<name>` as choices of those groups."""
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    cs.store(name="compare_schema", node=CompareConfig)
    cs.store(name="compare", node=OmegaConf.load(COMPARE_YAML))


_GROUP_NAMED_KEYS = ("sweep", "experiment")  # also config groups of the training app


def compose_compare_config(overrides: Sequence[str] = ()):
    """The composed compare config, as the pipeline gets it (for preflight, tests and notebooks).

    In a process that also registered the training schema (register_configs: tests, notebooks)
    the ConfigStore has a `sweep` group, so `sweep=`/`experiment=` are applied after composition."""
    from hydra import compose, initialize
    from hydra.core.override_parser.overrides_parser import OverridesParser

    register_compare_config()
    args = normalize_argv(overrides)
    late = [a for a in args if a.split("=", 1)[0] in _GROUP_NAMED_KEYS]
    with initialize(version_base="1.3", config_path=None):
        cfg = compose("compare", overrides=[a for a in args if a not in late])
    for override in OverridesParser.create().parse_overrides(late):
        setattr(cfg, override.key_or_group, override.value())
    return cfg


def preflight(argv: Sequence[str] | None = None) -> None:
    """cli.preflight for the compare config: compose once before Hydra does, so that a bad
    override ends in one line (`error: ...`, exit 2). Flags (--cfg, --help, ...) are left to Hydra."""
    import sys

    from hydra.errors import OverrideParseException

    from dropout_risk.cli import _explain

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a.startswith("-") for a in args):
        return
    try:
        compose_compare_config(args)
    except Exception as exc:  # noqa: BLE001 - any composition error becomes one line
        if isinstance(exc, OverrideParseException):
            bad = next((a for a in args if a.split("=", 1)[0] in str(exc)), None) or str(exc).splitlines()[0]
            msg = (f"cannot parse the override {bad!r}: write key=value, lists as runs=[id1,id2], and quote "
                   "values with special characters, e.g. 'out_dir=\"my dir\"'")
        else:
            msg = _explain(exc, args)
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)


def normalize_argv(args: Sequence[str]) -> list[str]:
    """Make the command lines of the README work under Hydra's override grammar:
    `filter=tags.outcome = 'converged'` (quotes, backticks, spaces) and `experiment=...` become
    quoted strings, `runs=a,b` and `runs=a` become the list `runs=[a,b]`."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in ("filter", "experiment") and value not in ("", "null") and value[0] not in "'\"":
            # Hydra's quoted strings: escape quotes, and backslashes only before a quote or the end
            escaped = re.sub(r'(\\*)("|$)', lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""),
                             value)
            arg = f'{key}="{escaped}"'
        elif sep and key == "runs" and value and not value.startswith("["):
            arg = f"runs=[{value}]"
        out.append(arg)
    return out


# --- what is fetched per run ----------------------------------------------------------------------


@dataclass
class RunRecord:
    """One run as the comparison sees it."""

    run_id: str
    name: str
    experiment_id: str
    experiment: str
    status: str
    artifact_uri: str
    params: dict[str, str]
    metrics: dict[str, float]  # final values, as MLflow reports them
    tags: dict[str, str]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # key -> (steps, values)
    val_y: np.ndarray | None = None
    val_p: np.ndarray | None = None  # sigmoid(val_logit); NaN where the logit is not finite

    @property
    def outcome(self) -> str:
        return self.tags.get("outcome", "")

    @property
    def has_reliability(self) -> bool:
        return self.val_y is not None and self.val_p is not None


@dataclass
class Comparison:
    out_dir: Path
    runs: list[RunRecord]
    differing: list[str]
    table: pd.DataFrame
    markdown: str
    files: dict[str, Path]
    notes: list[str]  # runs left out of the grid, selections cut at max_runs, ...
    comparison_run_id: str | None = None
    comparison_experiment_id: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)


# --- selecting runs ---------------------------------------------------------------------------


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    from dropout_risk.tracking import resolve_uri

    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        path = Path(resolve_uri(tracking_uri)[len(prefix):])
        if not path.exists():
            raise CompareError(
                f"no MLflow store at {path}: train some runs first, or pass tracking.uri=sqlite:///path/to/mlflow.db"
            )
    return MlflowClient(tracking_uri=resolve_uri(tracking_uri))


def _experiments(client) -> dict[str, str]:
    """id -> name of every experiment (deleted ones too: their runs can still be asked for)."""
    from mlflow.entities import ViewType

    out: dict[str, str] = {}
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
        out.update({e.experiment_id: e.name for e in page})
        token = page.token
        if not token:
            return out


def _search(client, experiment_ids: list[str], filter_string: str, max_results: int,
            order_by: list[str] | None = None, shown: str | None = None) -> tuple[list, bool]:
    """Runs matching the filter (at most max_results) and whether more matched."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    runs: list = []
    token = None
    try:
        while len(runs) <= max_results:
            page = client.search_runs(experiment_ids, filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                                      max_results=min(1000, max_results + 1 - len(runs)), order_by=order_by,
                                      page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    except MlflowException as exc:
        first = str(exc.message if hasattr(exc, "message") else exc).strip().splitlines()[0]
        raise CompareError(f'MLflow rejected the filter "{shown or filter_string}": {first}') from None
    return runs[:max_results], len(runs) > max_results


def _check_ids(ids: Iterable[str], what: str) -> list[str]:
    out = []
    for run_id in ids:
        run_id = str(run_id).strip()
        if not _RUN_ID.match(run_id):
            raise CompareError(f"{what} {run_id!r} is not a run id (32 hex characters, as printed by train.py "
                               "after 'run_id:'); quote ids that Hydra would read as numbers, e.g. runs=['0123...']")
        out.append(run_id)
    return out


def _trial_key(run) -> tuple:
    trial = run.data.tags.get("trial", "")
    return (0, int(trial), run.info.start_time) if trial.lstrip("-").isdigit() else (1, 0, run.info.start_time)


def select_runs(client, *, runs: Sequence[str] = (), sweep: str | None = None, filter: str | None = None,
                experiment: str | None = None, max_runs: int = 32,
                exclude_experiment: str | None = None) -> tuple[list, dict[str, str], list[str]]:
    """(MLflow runs in comparison order, experiment id -> name, notes). Raises CompareError."""
    from dropout_risk.tracking import runs_by_ids

    if max_runs < 1:
        raise CompareError(f"max_runs={max_runs} must be >= 1, e.g. max_runs=32")
    runs = list(runs or [])
    if runs and (sweep or filter or experiment):
        raise CompareError("runs=[...] lists the runs itself: drop sweep=, filter= and experiment=, "
                           "or drop runs= to select by sweep/filter")
    if not (runs or sweep or filter or experiment):
        raise CompareError('nothing selected: pass runs=[<id>,<id>], sweep=<sweep parent run id>, '
                           'filter="<MLflow search filter>" or experiment=<name>')
    experiments = _experiments(client)
    notes: list[str] = []

    if runs:
        ids = list(dict.fromkeys(_check_ids(runs, "runs entry")))  # de-duplicated, order kept
        if len(ids) > max_runs:
            raise CompareError(f"{len(ids)} run ids given but max_runs={max_runs}: pass max_runs={len(ids)} "
                               "to compare them all")
        found = runs_by_ids(client, list(experiments), ids)
        missing = [r for r in ids if r not in found]
        if missing:
            raise CompareError(f"run id{'s' if len(missing) > 1 else ''} not found in {client.tracking_uri}: "
                               f"{', '.join(missing)} (check the id, or pass tracking.uri=<the store it was logged to>)")
        for r in found.values():
            if r.info.lifecycle_stage == "deleted":
                notes.append(f"run {r.info.run_id} ({r.info.run_name}) is deleted; compared anyway")
        return [found[r] for r in ids], experiments, notes

    if experiment:
        if experiment in experiments:
            exp_ids = [experiment]
        else:
            exp_ids = [i for i, n in experiments.items() if n == experiment]
        if not exp_ids:
            known = ", ".join(sorted(n for n in experiments.values())) or "none"
            raise CompareError(f"experiment {experiment!r} not found in {client.tracking_uri}: known experiments: {known}")
    else:
        exp_ids = [i for i, n in experiments.items() if n != exclude_experiment]
    if not exp_ids:
        raise CompareError(f"the store {client.tracking_uri} has no experiments: train some runs first")

    clauses = []
    if sweep:
        [parent_id] = _check_ids([sweep], "sweep")
        parent = runs_by_ids(client, list(experiments), [parent_id]).get(parent_id)
        if parent is None:
            raise CompareError(f"sweep parent run {parent_id} not found in {client.tracking_uri}: pass the run id "
                               "of the sweep's parent run (its trials are nested under it)")
        clauses.append(f"tags.mlflow.parentRunId = '{parent_id}'")
    if filter:
        clauses.append(filter)  # MLflow filters are conjunctions (AND only, no parentheses)
    where = " and ".join(clauses)
    if sweep:
        # a sweep may be larger than max_runs; order its trials by number before cutting
        found, more = _search(client, exp_ids, where, 50_000, shown=filter)
        found.sort(key=_trial_key)
        if len(found) > max_runs:
            notes.append(f"the sweep has {len(found)} matching trials; comparing the first {max_runs} "
                         f"(pass max_runs={len(found)} to compare all)")
        found = found[:max_runs]
    else:
        found, more = _search(client, exp_ids, where, max_runs, shown=filter)
        if more:
            notes.append(f"more than {max_runs} runs matched; comparing the {max_runs} most recent "
                         "(raise max_runs or narrow the filter)")
    if not found:
        scope = f"experiment {experiment!r}" if experiment else "any experiment"
        what = (f"run {sweep} has no child runs" + (f' matching "{filter}"' if filter else "")
                + " (is it a sweep's parent run?)") if sweep else (
            f'no runs match "{filter}"' if filter else "no runs")
        raise CompareError(f"{what} in {scope} of {client.tracking_uri}: nothing to compare")
    return found, experiments, notes


# --- fetching curves and predictions ----------------------------------------------------------------


Point = tuple[int, int, float]  # (step, timestamp, value)


def _histories_sql(store, run_ids: list[str], key: str) -> dict[str, list[Point]]:
    """One metric of all runs in one SQL query of (run, step, timestamp, value) columns: what
    SqlAlchemyStore.get_metric_history_bulk returns, without building an entity per point
    (~20x faster on long histories). NaN is stored as is_nan (value 0), as MLflow reads it."""
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    out: dict[str, list[Point]] = {r: [] for r in run_ids}
    with store.ManagedSessionMaker() as session:
        for i in range(0, len(run_ids), 500):
            rows = (session.query(SqlMetric.run_uuid, SqlMetric.step, SqlMetric.timestamp, SqlMetric.value,
                                  SqlMetric.is_nan)
                    .filter(SqlMetric.key == key, SqlMetric.run_uuid.in_(run_ids[i : i + 500])).all())
            for run_id, step, ts, value, is_nan in rows:
                out[run_id].append((int(step), int(ts), math.nan if is_nan else float(value)))
    return out


def _histories(client, run_ids: list[str], key: str, workers: int) -> dict[str, list[Point]]:
    """run id -> [(step, timestamp, value)] of one metric: for SQL stores in one query for all
    runs, else (a tracking server) one get_metric_history request per run, in parallel."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if isinstance(store, SqlAlchemyStore) and type(store)._filter_entity_ids is SqlAlchemyStore._filter_entity_ids:
        try:
            return _histories_sql(store, run_ids, key)
        except Exception:  # noqa: BLE001 - a schema this code does not know: the public API below
            pass

    def one(run_id: str) -> list[Point]:
        return [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(run_ids, pool.map(one, run_ids), strict=True))


def _as_curve(history: list[Point]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) by step; of values logged twice at one step the last one counts."""
    by_step: dict[int, float] = {}
    for step, _, value in sorted(history, key=lambda p: (p[0], p[1])):
        by_step[step] = value
    steps = np.fromiter(by_step.keys(), dtype=np.int64, count=len(by_step))
    return steps, np.fromiter(by_step.values(), dtype=np.float64, count=len(by_step))


def _load_predictions(artifact_uri: str, tracking_uri: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(val_y, sigmoid(val_logit)) from predictions/predictions.npz, or None if the run has none."""
    import io

    from dropout_risk.tracking import artifact_bytes

    try:
        raw = artifact_bytes(artifact_uri, PREDICTIONS, tracking_uri)
        if raw is None:
            return None
        with np.load(io.BytesIO(raw)) as data:
            y = np.asarray(data["val_y"]).astype(np.int64)
            logit = np.asarray(data["val_logit"], dtype=np.float64)
    except Exception:  # noqa: BLE001 - missing, unreadable or partial: the run has no reliability data
        return None
    if y.shape != logit.shape or y.size == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        p = 1.0 / (1.0 + np.exp(-logit))
    p[~np.isfinite(logit)] = np.nan  # a diverged model: drawn as "diverged: no probabilities"
    return y, p


def fetch(client, mlflow_runs: list, experiments: dict[str, str], workers: int = 8) -> list[RunRecord]:
    records = [
        RunRecord(
            run_id=r.info.run_id, name=r.info.run_name or r.info.run_id[:8], experiment_id=r.info.experiment_id,
            experiment=experiments.get(r.info.experiment_id, r.info.experiment_id), status=r.info.status,
            artifact_uri=r.info.artifact_uri or "", params=dict(r.data.params), metrics=dict(r.data.metrics),
            tags=dict(r.data.tags),
        )
        for r in mlflow_runs
    ]
    ids = [r.run_id for r in records]
    for key in CURVES:
        hist = _histories(client, ids, key, workers)
        for rec in records:
            if hist[rec.run_id]:
                rec.curves[key] = _as_curve(hist[rec.run_id])
    with ThreadPoolExecutor(max_workers=workers) as pool:
        loaded = list(pool.map(lambda rec: _load_predictions(rec.artifact_uri, client.tracking_uri), records))
    for rec, pred in zip(records, loaded, strict=True):
        if pred is not None:
            rec.val_y, rec.val_p = pred
    return records


# --- what differs, the table ---------------------------------------------------------------------


def differing_params(records: Sequence[RunRecord]) -> list[str]:
    """Param keys whose value is not the same in every run (absent counts as a value), except
    those that only repeat the run name (tracking.run_name of sweep trials)."""
    keys = sorted({k for r in records for k in r.params})
    return [k for k in keys if len({r.params.get(k) for r in records}) > 1
            and not all(r.params.get(k) == r.name for r in records)]


def _metric_order(keys: Iterable[str]) -> list[str]:
    def rank(key: str) -> tuple:
        split, _, name = key.partition("/")
        group = {"val": 0, "test": 1}.get(split, 3 if "/" in key else 2)  # val, test, temperature..., others
        base = name.removesuffix("_calibrated")
        first = _FIRST_METRICS.index(base) if base in _FIRST_METRICS else len(_FIRST_METRICS)
        return (group, split if group == 3 else "", first, base, name.endswith("_calibrated"), key)

    return sorted(set(keys), key=rank)


def comparison_table(records: Sequence[RunRecord], differing: Sequence[str]) -> pd.DataFrame:
    """One row per run: id, name, experiment, outcome, the params that differ, every final metric."""
    metrics = _metric_order(k for r in records for k in r.metrics)
    rows = []
    for r in records:
        row: dict[str, Any] = {"run_id": r.run_id, "run_name": r.name, "experiment": r.experiment,
                               "outcome": r.outcome}
        row.update({k: r.params.get(k) for k in differing})
        row.update({k: r.metrics.get(k) for k in metrics})
        rows.append(row)
    columns = ["run_id", "run_name", "experiment", "outcome", *differing, *metrics]
    frame = pd.DataFrame(rows, columns=columns)
    for k in metrics:
        frame[k] = pd.to_numeric(frame[k], errors="coerce")
    return frame


def _rows(records: Sequence[RunRecord], frame: pd.DataFrame, digits: int | None) -> list[list[str]]:
    """Cells as text: a metric a run lacks is empty, a metric it logged as NaN is `nan`."""
    out = []
    for rec, (_, row) in zip(records, frame.iterrows(), strict=True):
        cells = []
        for col in frame.columns:
            value = row[col]
            if col in rec.metrics:
                v = float(rec.metrics[col])
                cells.append(repr(v) if digits is None else (f"{v:.{digits}g}" if math.isfinite(v) else str(v)))
            else:
                cells.append("" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value))
        out.append(cells)
    return out


def write_csv(path: Path, records: Sequence[RunRecord], frame: pd.DataFrame) -> None:
    """Full precision (repr of the float MLflow returned), empty where a run lacks the metric."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(frame.columns)
        writer.writerows(_rows(records, frame, digits=None))


def markdown_table(records: Sequence[RunRecord], frame: pd.DataFrame, digits: int = 4) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    header = [esc(str(c)) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for cells in _rows(records, frame, digits=digits):
        lines.append("| " + " | ".join(esc(c) for c in cells) + " |")
    return "\n".join(lines)


# --- the figures ------------------------------------------------------------------------------------


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """optim.lr -> lr, optim._target_ -> optim, model.hidden -> hidden (full key where names clash)."""
    def short(k: str) -> str:
        parts = k.split(".")
        return parts[-2] if parts[-1] == "_target_" and len(parts) > 1 else parts[-1]

    names = [short(k) for k in keys]
    return {k: (n if names.count(n) == 1 else k) for k, n in zip(keys, names, strict=True)}


def _short_value(value: str | None) -> str:
    if value is None:
        return "-"
    text = str(value)
    if re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+", text):  # torch.optim.SGD -> SGD
        text = text.rsplit(".", 1)[-1]
    try:
        number = float(text)
        if text.lower() not in ("nan", "inf", "-inf", "true", "false") and not text.isdigit():
            text = f"{number:.3g}"
    except ValueError:
        pass
    text = text.replace(", ", ",")
    return text if len(text) <= 18 else text[:17] + "…"


def _wrap(parts: Sequence[str], width: int, max_lines: int) -> list[str]:
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += "  " + part
        else:
            lines.append(part)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1] + "…"
    return lines


def _fmt_metric(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def key_params(records: Sequence[RunRecord], differing: Sequence[str]) -> list[str]:
    """The differing params worth a title: those with more than one value among the runs that
    have them (not optimiser-specific keys that differ only by being absent, e.g. optim.betas)."""
    return [k for k in differing if len({r.params[k] for r in records if k in r.params}) > 1]


def panel_title(rec: RunRecord, keys: Sequence[str]) -> str:
    """Run name; the key params (shortened) it has; ECE and AUROC."""
    short = _short_keys(keys)
    name = rec.name if len(rec.name) <= 44 else rec.name[:43] + "…"
    params = [f"{short[k]}={_short_value(rec.params[k])}" for k in keys if k in rec.params]
    lines = [name, *_wrap(params, 40, 2)]
    lines.append(f"ECE {_fmt_metric(rec.metrics.get('val/ece'))} · AUROC {_fmt_metric(rec.metrics.get('val/auroc'))}"
                 + (f" · {rec.outcome}" if rec.outcome and rec.outcome != "converged" else ""))
    return "\n".join(lines)


def _make_room_for_titles(fig, lines: int, fontsize: float) -> None:
    """The grid of plots.reliability_grid leaves room for a one-line title per cell: grow the
    figure and move each row down so `lines`-line titles fit above every row."""
    if lines <= 1:
        return
    extra = (lines - 1) * fontsize * 1.25 / 72  # inches per row
    width, height = fig.get_size_inches()
    axes = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    rows = {ax: ax.get_subplotspec().get_topmost_subplotspec().rowspan.start for ax in axes}
    nrows = max(rows.values()) + 1
    boxes = {ax: ax.get_position() for ax in axes}
    new_height = height + nrows * extra
    fig.set_size_inches(width, new_height)
    for ax in axes:
        box = boxes[ax]
        y0 = box.y0 * height + (nrows - 1 - rows[ax]) * extra
        ax.set_position([box.x0, y0 / new_height, box.width, box.height * height / new_height])


GridPanel = tuple[np.ndarray, np.ndarray, str]
_TITLE_FONTSIZE = 8.5


def grid_panels(records: Sequence[RunRecord], differing: Sequence[str]) -> list[GridPanel]:
    """(val_y, val_p, title) of the runs that have predictions, in order."""
    keys = key_params(records, differing)
    return [(r.val_y, r.val_p, panel_title(r, keys)) for r in records if r.has_reliability]


def _grid_figure(panels: Sequence[GridPanel], ncols: int, first: int = 0, total: int | None = None,
                 title_lines: int | None = None):
    """plots.reliability_grid of `panels`, which are panels first..first+len-1 of a grid of
    `total`: taller titles, the legend only on the grid's first panel (the others repeat it,
    their ECE is in the title), tick labels only where a row or column of the grid starts/ends."""
    from dropout_risk import plots

    total = len(panels) if total is None else total
    fig = plots.reliability_grid(panels, ncols=ncols)
    cells = [(fig.axes[i], fig.axes[i + 1]) for i in range(0, len(fig.axes), 2)]
    for i, (ax_curve, ax_hist) in enumerate(cells, start=first):
        ax_curve.title.set_fontsize(_TITLE_FONTSIZE)
        if i > 0 and ax_curve.get_legend() is not None:
            ax_curve.get_legend().remove()
        if i % ncols:
            ax_curve.tick_params(labelleft=False)
        if i + ncols < total:  # a panel below it: its x axis says the same
            ax_hist.tick_params(labelbottom=False)
            ax_hist.set_xlabel("")
    lines = title_lines or max(t.count("\n") + 1 for _, _, t in panels)
    _make_room_for_titles(fig, lines, _TITLE_FONTSIZE)
    return fig


def reliability_grid_figure(records: Sequence[RunRecord], differing: Sequence[str], ncols: int = 4):
    """Final validation reliability diagrams of the runs that have predictions, side by side
    (titles: run name, the params that differ, ECE, AUROC)."""
    panels = grid_panels(records, differing)
    return _grid_figure(panels, min(ncols, len(panels)))


def _grid_rows_png(panels: Sequence[GridPanel], ncols: int, first: int, total: int, title_lines: int) -> bytes:
    from dropout_risk import plots

    fig = _grid_figure(panels, ncols, first, total, title_lines)
    try:
        return plots.figure_to_png_bytes(fig)
    finally:
        plots.close(fig)


def save_reliability_grid(records: Sequence[RunRecord], differing: Sequence[str], path: Path, ncols: int = 4,
                          workers: int | None = None, while_drawing: Callable[[], None] | None = None) -> None:
    """reliability_grid_figure saved as PNG (save_grid_panels)."""
    save_grid_panels(grid_panels(records, differing), path, ncols, workers, while_drawing)


def save_grid_panels(panels: Sequence[GridPanel], path: Path, ncols: int = 4, workers: int | None = None,
                     while_drawing: Callable[[], None] | None = None) -> None:
    """The reliability grid of `panels` saved as PNG. Text rendering makes a 32-panel grid take
    seconds, so on Linux its rows are drawn in `workers` forked processes (default: the CPU count,
    at most 4) and stacked; the margins are fixed in inches, so the seams look like row gaps.
    `while_drawing` runs in this process meanwhile."""
    import io
    import os
    import sys

    from PIL import Image

    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    workers = min(workers or min(4, os.cpu_count() or 1), nrows)
    if workers < 2 or not sys.platform.startswith("linux") or len(panels) < 8:
        fig = _grid_figure(panels, ncols)
        fig.savefig(path)
        from dropout_risk import plots

        plots.close(fig)
        if while_drawing:
            while_drawing()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    lines = max(t.count("\n") + 1 for _, _, t in panels)
    bounds = np.linspace(0, nrows, workers + 1).round().astype(int) * ncols
    chunks = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_grid_rows_png, panels[lo:hi], ncols, lo, len(panels), lines) for lo, hi in chunks]
        if while_drawing:
            while_drawing()
        try:
            pngs = [f.result() for f in futures]
        except BrokenProcessPool:  # a worker died (e.g. out of memory): draw here instead
            pngs = [_grid_rows_png(panels[lo:hi], ncols, lo, len(panels), lines) for lo, hi in chunks]
    parts = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in pngs]
    width = max(p.shape[1] for p in parts)  # a last row with fewer panels than ncols is narrower
    parts = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in parts]
    Image.fromarray(np.vstack(parts)).save(path, dpi=(100, 100))


def _log_ylim(values: list[np.ndarray]) -> tuple[float, float] | None:
    """Log-axis limits around the positive finite values, padded; None if there are none."""
    flat = np.concatenate(values) if values else np.empty(0)
    flat = flat[np.isfinite(flat) & (flat > 0)]
    if flat.size == 0:
        return None
    lo, hi = math.log10(flat.min()), math.log10(flat.max())
    if hi - lo < 0.2:
        mid = 0.5 * (lo + hi)
        lo, hi = mid - 0.1, mid + 0.1
    pad = 0.06 * (hi - lo)
    return 10 ** (lo - pad), 10 ** (hi + pad)


def loss_curves_figure(records: Sequence[RunRecord]):
    """Two panels: train/loss per step and val/loss per epoch of every run, overlaid, log y.
    The y range is that of the runs that did not diverge; a diverged run's curve runs off the
    top and its last finite point is a cross (on the top edge when it is off the chart).
    Non-finite points are left out."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatterSciNotation, MaxNLocator

    class PlainLog(LogFormatterSciNotation):  # 0.4, 0.6, 1, 2 instead of 4 x 10^-1
        def __call__(self, x, pos=None):
            return f"{x:.3g}" if super().__call__(x, pos) else ""

    n = len(records)
    legend_cols = 1 if n <= 16 else 2
    legend_w = 2.4 * legend_cols
    width, height = 10.5 + legend_w, 4.6
    fig = Figure(figsize=(width, height), dpi=100)
    left, right, top, bottom, gap = 0.8, legend_w + 0.2, 0.45, 0.6, 0.75
    axis_w = (width - left - right - gap) / 2
    grid = fig.add_gridspec(1, 2, left=left / width, right=1 - right / width, top=1 - top / height,
                            bottom=bottom / height, wspace=gap / axis_w)
    ax_train, ax_val = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    panels = ((ax_train, "train/loss", None, "train/loss (per step)", "step"),
              (ax_val, "val/loss", "o", "val/loss (per epoch)", "epoch"))
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    styles = ["-", "--", ":", "-."]
    handles, labels = [], []
    for i, rec in enumerate(records):
        color, ls = cmap(i % cmap.N), styles[(i // cmap.N) % len(styles)]
        handle = None
        for ax, key, marker, _, _ in panels:
            steps, values = rec.curves.get(key, (np.empty(0), np.empty(0)))
            ok = np.isfinite(values) & (values > 0)
            if ok.any():
                (line,) = ax.plot(steps[ok], values[ok], color=color, ls=ls, lw=1.2, marker=marker, ms=3)
                handle = handle or line
        if handle is None:
            (handle,) = ax_train.plot([], [], color=color, ls=ls)
        handles.append(handle)
        labels.append(rec.name + (" (diverged)" if rec.outcome == "diverged" else "")
                      + ("" if rec.curves else " (no loss curves)"))

    for ax, key, _, title, xlabel in panels:
        ax.set_title(title, fontsize=10, y=1.0, pad=4)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, lw=0.5)
        curves = {r.run_id: r.curves[key][1] for r in records if key in r.curves}
        stable = [v for r in records if r.outcome != "diverged" and r.run_id in curves for v in [curves[r.run_id]]]
        limits = _log_ylim(stable) or _log_ylim(list(curves.values()))
        if limits is None:
            ax.text(0.5, 0.5, f"no finite {key} logged", ha="center", va="center", color="0.3",
                    transform=ax.transAxes)
            continue
        ax.set_yscale("log")
        ax.set_ylim(*limits)
        ax.yaxis.set_major_formatter(PlainLog())
        ax.yaxis.set_minor_formatter(PlainLog(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        for i, rec in enumerate(records):
            if rec.outcome != "diverged" or key not in rec.curves:
                continue
            steps, values = rec.curves[key]
            ok = np.flatnonzero(np.isfinite(values) & (values > 0))
            if ok.size:
                y = min(values[ok[-1]], limits[1])
                ax.plot([steps[ok[-1]]], [y], ls="none", marker="x", ms=8, mew=2, color=cmap(i % cmap.N),
                        clip_on=False, zorder=5)
    ax_train.set_ylabel("loss (log scale)")
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1 - (legend_w + 0.05) / width, 1 - top / height),
               fontsize=7, ncols=legend_cols, frameon=False, title="run (x: diverged)", title_fontsize=8)
    return fig


# --- the whole comparison -----------------------------------------------------------------------


def _default_artifact_location(tracking_uri: str, given: str | None) -> str | None:
    if given:
        return given
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return str(Path(tracking_uri[len(prefix):]).parent / "artifacts")
    return None


def _log_comparison(tracking_uri: str, experiment: str, artifact_location: str | None, out_dir: Path,
                    records: Sequence[RunRecord], selection: str, markdown: str) -> tuple[str, str]:
    from dropout_risk.tracking import Run, resolve_uri

    uri = resolve_uri(tracking_uri)
    tags = {"comparison_of": ",".join(r.run_id for r in records), "comparison_selection": selection[:5000],
            "n_runs": str(len(records))}
    note = f"Comparison of {len(records)} runs ({selection}).\n\n{markdown}"
    if len(note) <= 8000:  # MLflow's tag limit; shown as the run's description in the UI
        tags["mlflow.note.content"] = note
    run = Run.start(uri, experiment, _default_artifact_location(uri, artifact_location),
                    f"compare-{len(records)}runs-{out_dir.name}", tags=tags)
    try:
        for path in sorted(out_dir.iterdir()):
            if path.is_file():
                run.log_file(path)
        run.end("FINISHED")
    except BaseException:
        run.end("FAILED")
        raise
    return run.run_id, run.experiment_id


def compare(runs: Sequence[str] = (), sweep: str | None = None, filter: str | None = None,
            experiment: str | None = None, *, tracking_uri: str = "sqlite:///mlruns/mlflow.db",
            out_dir: str | Path = "compare_out", max_runs: int = 32, log_to_mlflow: bool = True,
            comparison_experiment: str = "dropout-risk-comparisons", artifact_location: str | None = None,
            ncols: int = 4) -> Comparison:
    """Select runs (ids, a sweep's trials or a filter), draw and tabulate them into `out_dir`
    (reliability_grid.png, loss_curves.png, comparison.csv, comparison.md) and log that folder
    as a new run of `comparison_experiment` tagged `comparison_of`. Raises CompareError when
    nothing can be compared (unknown ids, empty selection, a rejected filter, no run with
    reliability data)."""
    from dropout_risk import plots

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    client = _client(tracking_uri)
    selected, experiments, notes = select_runs(
        client, runs=runs, sweep=sweep, filter=filter, experiment=experiment, max_runs=max_runs,
        exclude_experiment=comparison_experiment)
    t1 = time.perf_counter()
    records = fetch(client, selected, experiments)
    seconds["select_s"], seconds["fetch_s"] = t1 - t0, time.perf_counter() - t1

    without = [r for r in records if not r.has_reliability]
    if len(without) == len(records):
        raise CompareError(
            f"none of the {len(records)} selected runs has reliability data ({PREDICTIONS}: logged by train() "
            f"since temperature scaling; re-run them with pipelines/train.py): {', '.join(r.name for r in records[:5])}"
            + (" ..." if len(records) > 5 else ""))
    for r in without:
        notes.append(f"run {r.run_id} ({r.name}): no reliability data (no {PREDICTIONS}); left out of the grid")

    t2 = time.perf_counter()
    differing = differing_params(records)
    frame = comparison_table(records, differing)
    markdown = markdown_table(records, frame)
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in ("reliability_grid.png", "loss_curves.png", "comparison.csv",
                                            "comparison.md")}
    write_csv(files["comparison.csv"], records, frame)
    selection = _describe(runs, sweep, filter, experiment)
    files["comparison.md"].write_text(f"# Comparison of {len(records)} runs\n\n{selection}\n\n{markdown}\n"
                                      + "".join(f"\n- {n}" for n in notes) + ("\n" if notes else ""))

    def draw_loss_curves() -> None:
        fig = loss_curves_figure(records)
        fig.savefig(files["loss_curves.png"])
        plots.close(fig)

    save_reliability_grid(records, differing, files["reliability_grid.png"], ncols=ncols,
                          while_drawing=draw_loss_curves)
    seconds["report_s"] = time.perf_counter() - t2

    result = Comparison(out_dir=out, runs=records, differing=differing, table=frame, markdown=markdown,
                        files=files, notes=notes, seconds=seconds)
    if log_to_mlflow:
        t3 = time.perf_counter()
        result.comparison_run_id, result.comparison_experiment_id = _log_comparison(
            tracking_uri, comparison_experiment, artifact_location, out, records, selection, markdown)
        seconds["log_s"] = time.perf_counter() - t3
    seconds["total_s"] = time.perf_counter() - t0
    return result


def _describe(runs: Sequence[str], sweep: str | None, filter: str | None, experiment: str | None) -> str:
    parts = []
    if runs:
        parts.append(f"runs=[{','.join(runs)}]")
    if sweep:
        parts.append(f"sweep={sweep}")
    if filter:
        parts.append(f'filter="{filter}"')
    if experiment:
        parts.append(f"experiment={experiment}")
    return " ".join(parts)


def compare_from_config(cfg) -> Comparison:
    """compare() with the keys of conf/compare.yaml."""
    return compare(
        runs=[str(r) for r in (cfg.runs or [])], sweep=_opt(cfg.sweep), filter=_opt(cfg.filter),
        experiment=_opt(cfg.experiment), tracking_uri=cfg.tracking.uri, out_dir=cfg.out_dir,
        max_runs=cfg.max_runs, log_to_mlflow=cfg.log_to_mlflow, comparison_experiment=cfg.comparison_experiment,
        artifact_location=cfg.tracking.get("artifact_location"),
    )


def _opt(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value)


def run_compare(cfg, echo: Callable[[str], None] = print, warn: Callable[[str], None] | None = None) -> int:
    """What pipelines/compare.py does: compare, then print the notes (stderr), the markdown
    table, the output folder and the comparison run."""
    import sys

    from dropout_risk.tracking import runs_url

    warn = warn or (lambda line: print(line, file=sys.stderr))
    result = compare_from_config(cfg)
    for note in result.notes:
        warn(f"warning: {note}")
    echo(result.markdown)
    echo("")
    shown = sum(r.has_reliability for r in result.runs)
    echo(f"compared {len(result.runs)} runs ({shown} in the reliability grid) in "
         f"{result.seconds['total_s']:.1f} s")
    echo(f"output: {result.out_dir}")
    if result.comparison_run_id:
        echo(f"comparison run_id: {result.comparison_run_id} (experiment {cfg.comparison_experiment!r}, "
             f"tag comparison_of)")
        echo(f"  in the MLflow UI: {runs_url(result.comparison_experiment_id)}")
    return 0
