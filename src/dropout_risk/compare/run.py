"""compare(): tracked runs side by side: reliability diagrams, loss curves and a table of the
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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dropout_risk.compare.curves import loss_curves_figure
from dropout_risk.compare.fetch import RunRecord, fetch
from dropout_risk.compare.grid import save_reliability_grid
from dropout_risk.compare.select import open_store, select_runs
from dropout_risk.compare.table import (
    compact_table,
    comparison_table,
    differing_params,
    markdown_table,
    write_csv,
)
from dropout_risk.console import NBSP, WIDTH, fit
from dropout_risk.errors import CompareError
from dropout_risk.tracking.names import PREDICTIONS_ARTIFACT


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


def _log_comparison(tracking_uri: str, experiment: str, artifact_location: str | None, out_dir: Path,
                    records: Sequence[RunRecord], selection: str, markdown: str) -> tuple[str, str]:
    from dropout_risk.tracking.run import Run
    from dropout_risk.tracking.store import default_artifact_root, resolve_uri

    uri = resolve_uri(tracking_uri)
    tags = {"comparison_of": ",".join(r.run_id for r in records), "comparison_selection": selection[:5000],
            "n_runs": str(len(records))}
    note = f"Comparison of {len(records)} runs ({selection}).\n\n{markdown}"
    if len(note) <= 8000:  # MLflow's tag limit; shown as the run's description in the UI
        tags["mlflow.note.content"] = note
    run = Run.start(uri, experiment, artifact_location or default_artifact_root(uri),
                    f"compare-{len(records)}runs-{out_dir.name}", tags=tags)
    with run.failing_on_error():
        for path in sorted(out_dir.iterdir()):
            if path.is_file():
                run.log_file(path)
        run.end("FINISHED")
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
    from dropout_risk.plots.png import close

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    client = open_store(tracking_uri)
    selected, experiments, notes = select_runs(
        client, runs=runs, sweep=sweep, filter=filter, experiment=experiment, max_runs=max_runs,
        exclude_experiment=comparison_experiment)
    t1 = time.perf_counter()
    records = fetch(client, selected, experiments)
    seconds["select_s"], seconds["fetch_s"] = t1 - t0, time.perf_counter() - t1

    without = [r for r in records if not r.has_reliability]
    if len(without) == len(records):
        raise CompareError(
            f"none of the {len(records)} selected runs has reliability data ({PREDICTIONS_ARTIFACT}: logged by train() "
            f"since temperature scaling; re-run them with pipelines/train.py): {', '.join(r.name for r in records[:5])}"
            + (" ..." if len(records) > 5 else ""))
    for r in without:
        notes.append(f"run {r.run_id} ({r.name}): no reliability data (no {PREDICTIONS_ARTIFACT}); left out of the grid")

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
        close(fig)

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
    """What pipelines/compare.py does: compare, then print the notes (stderr), a compact table
    (run name, the key params that fit, outcome, validation log loss, ECE and AUROC), where the
    full table is, the output folder and the comparison run; every line at most console.WIDTH
    columns."""
    import sys

    from dropout_risk.tracking.store import runs_url

    warn = warn or (lambda line: print(line, file=sys.stderr))
    result = compare_from_config(cfg)
    for note in result.notes:
        warn(fit(f"warning: {note}"))
    table, _ = compact_table(result.runs, result.differing, WIDTH)
    echo(table)
    echo(fit(f"full table: {result.files['comparison.md']} ({len(result.table.columns)} columns; "
             "at full precision in comparison.csv)"))
    echo("")
    shown = sum(r.has_reliability for r in result.runs)
    echo(f"compared {len(result.runs)} runs ({shown} in the reliability grid) in "
         f"{result.seconds['total_s']:.1f} s")
    echo(fit(f"output: {result.out_dir}"))
    if result.comparison_run_id:
        echo(fit(f"comparison run_id: {result.comparison_run_id} (experiment {cfg.comparison_experiment!r}, "
                 f"tag{NBSP}comparison_of)"))
        echo(fit(f"  in the MLflow UI: {runs_url(result.comparison_experiment_id)}"))
    return 0
