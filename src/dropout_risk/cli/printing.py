"""What the pipelines print at the end: metric tables and run, sweep and pitfall summaries, every line
at most console.WIDTH (100) columns."""

from __future__ import annotations

from omegaconf import DictConfig

from dropout_risk.console import INDENT, NBSP, WIDTH, fit, fit_command
from dropout_risk.format import fmt

SMALL_FILE = 2000  # students: below this a plain run suggests cross-validation


def _interval(metrics: dict[str, float], key: str) -> str:
    lo, hi = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    return "" if lo is None or hi is None else f"[{fmt(lo)}, {fmt(hi)}]"


def _columns(rows: list[list[str]]) -> str:
    """Rows of cells as text: the first column left-aligned, the others right-aligned, each as
    wide as its widest cell, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:],
                                                                                       strict=True))]).rstrip()
                     for r in rows)


def metrics_table(metrics: dict[str, float], splits: tuple[str, ...] = ("val", "test"),
                  baselines: tuple[str, ...] | list[str] = ()) -> str:
    """Rows = metric names; columns = splits, the test metric's 95% interval (where computed) and
    each baseline's test value on the same rows; each column as wide as its widest cell."""
    names: list[str] = []
    for key in metrics:
        split, _, metric = key.partition("/")
        if split in splits and metric not in names and not metric.endswith(("_ci_low", "_ci_high")):
            names.append(metric)
    with_ci = "test" in splits and any(k.startswith("test/") and k.endswith("_ci_low") for k in metrics)
    rows = [["metric", *splits, *(["test 95% CI"] if with_ci else []), *(f"{b} test" for b in baselines)]]
    for n in names:
        cells = [fmt(metrics[f"{s}/{n}"]) if f"{s}/{n}" in metrics else "" for s in splits]
        if with_ci:
            cells.append(_interval(metrics, f"test/{n}"))
        cells += [fmt(metrics[f"baseline/{b}/test/{n}"]) if f"baseline/{b}/test/{n}" in metrics else ""
                  for b in baselines]
        rows.append([n, *cells])
    return _columns(rows)


def _verdict(text: str) -> str:
    """The verdict line (`MLP - hgb on test (...): auroc ...; log_loss ...`); when it does not fit,
    its head on one line and each metric on its own line below."""
    head, sep, parts = text.partition(": ")
    if len(text) <= WIDTH or not sep:
        return fit(text)
    return fit("\n".join([f"{head}:", ";\n".join(f"{INDENT}{p}" for p in parts.split("; "))]))


def print_run_summary(result, cfg: DictConfig) -> None:
    m = result.metrics
    trained, reported = int(m["epochs_completed"]), int(m.get("reported_epoch", m["epochs_completed"]))
    stopping = cfg.trainer.early_stopping
    epochs = (f"{trained} epochs, reporting the best: epoch {reported} (early stopping on val log loss, "
              f"patience {stopping.patience})" if stopping.enabled and result.outcome != "diverged"
              else f"{trained} epochs" + ("" if result.outcome == "diverged" else ", reporting the last (early stopping off)"))
    print()
    print(fit(f"run: {result.run_name}   outcome: {result.outcome}"
              + (f" at step {result.diverged_at_step}" if result.diverged_at_step else "")
              + f"   fit: {m['time/fit_s']:.2f} s, {epochs}"))
    print(metrics_table(m, baselines=result.baselines))
    if "bayes/log_loss_bayes" in m:
        print(f"Bayes-optimal (p_true) on test: log loss {fmt(m['bayes/log_loss_bayes'])}, "
              f"AUROC {fmt(m['bayes/auroc_bayes'])}")
    if result.verdict:
        print(_verdict(result.verdict))
    if 0 < result.n_students < SMALL_FILE and not cfg.data.cv_folds:
        print(fit(f"hint: {result.n_students:,} students, so the test split holds "
                  f"~{round(result.n_students * cfg.data.test_frac)} and one split's numbers are noisy: "
                  "data.cv_folds=5 tests every student once (5-fold cross-validation)"))
    print(f"run_id: {result.run_id}")
    _print_ui(cfg, result.experiment_id)


def _print_ui(cfg: DictConfig, experiment_id: str) -> None:
    """The command that opens the MLflow UI on the run's store (wrapped with ` \\` continuations
    when long, so it still runs as printed) and the URL of the runs view."""
    from dropout_risk.tracking.store import runs_url, ui_command

    print(fit_command("MLflow UI:", ui_command(cfg.tracking.uri)))
    print(fit(f"  then open {runs_url(experiment_id)}"))


def cv_table(mean: dict[str, float], sd: dict[str, float], baselines: list[str]) -> str:
    """Rows = metric names; columns = val and test as mean ± sd over folds, then each baseline's test."""
    names: list[str] = []
    for key in mean:
        split, _, metric = key.partition("/")
        if split in ("val", "test") and metric not in names and not metric.endswith(("_ci_low", "_ci_high")):
            names.append(metric)

    def cell(key: str) -> str:
        return f"{fmt(mean[key])} ± {fmt(sd[key])}" if key in mean else ""

    rows = [["metric", "val", "test", *(f"{b} test" for b in baselines)]]
    rows += [[n, cell(f"val/{n}"), cell(f"test/{n}"), *(cell(f"baseline/{b}/test/{n}") for b in baselines)]
             for n in names]
    return _columns(rows)


def print_cv_summary(result, cfg: DictConfig) -> None:
    folds = result.folds
    print()
    print(fit(f"cross-validation: {result.run_name}   {len(folds)} folds   outcomes: "
              + ", ".join(f.outcome for f in folds)))
    print("mean ± sd over folds (each fold's test split is a different fifth of the students)"
          .replace("a different fifth", f"a different 1/{len(folds)}"))
    print(cv_table(result.mean, result.sd, folds[0].baselines))
    for key in ("vs_baseline/test/auroc_diff", "vs_baseline/test/log_loss_diff"):
        if key in result.mean:
            print(f"MLP - best baseline, {key.split('/')[-1][:-5]} on test: {result.mean[key]:+.4f} ± "
                  f"{result.sd[key]:.4f} over folds")
    print(fit(f"cv run_id: {result.run_id}  (folds: {', '.join(f.run_id for f in folds)})"))
    _print_ui(cfg, result.experiment_id)


# The sweep summary's printed columns (sweep_summary.csv on the parent run has them all, at full
# precision): the outcome column also gives a diverged trial's step, and a table still wider than
# the terminal drops these, last first, saying so.
SWEEP_DROPPABLE = ("brier", "time_s", "train_loss")


def sweep_table(summary, width: int = WIDTH) -> tuple[str, list[str]]:
    """The summary as printed: one row per trial (its Optuna number, as in the run names, tags and
    live lines), `diverged, step N` in the outcome column, numbers to 4 significant digits;
    returns (table, the columns it left out to fit `width`)."""
    import textwrap

    import pandas as pd

    frame = summary.drop(columns=["run_id"]).copy()
    step = frame.pop("diverged_at_step")
    frame["outcome"] = [f"{o}, step {int(s)}" if o == "diverged" and pd.notna(s) else o
                        for o, s in zip(frame.outcome, step, strict=True)]
    frame = frame.rename(columns={"duration_s": "time_s"})
    dropped: list[str] = []
    while True:
        text = textwrap.dedent(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
        left = [c for c in SWEEP_DROPPABLE if c in frame.columns]
        if max(map(len, text.splitlines())) <= width or not left:
            return text, dropped
        frame = frame.drop(columns=[left[0]])
        dropped.append(left[0])


def print_sweep_summary(result, cfg: DictConfig) -> None:
    from dropout_risk.tracking.names import SUMMARY_ARTIFACT

    table, dropped = sweep_table(result.summary)
    print()
    print(table)
    if dropped:
        print(fit(f"(left out to fit {WIDTH} columns: {', '.join(dropped)}; all columns are in "
                  f"{SUMMARY_ARTIFACT} on the sweep's run)"))
    lo, hi = result.boundary
    print()
    if result.sharpness is not None:
        print(fit(f"sharpness at init lambda_max = {result.sharpness:.4g}; plain-GD threshold 2/lambda_max = "
                  f"{result.gd_threshold:.4g} (a reference for plain gradient descent, not for adaptive optimisers)"))
    print(fit(f"observed boundary: largest converged lr {fmt(lo) if lo else 'none'}, "
              f"smallest diverged lr {fmt(hi) if hi else 'none'}"
              + (f" ({hi / result.gd_threshold:.3g}{NBSP}x{NBSP}2/lambda_max)" if hi and result.gd_threshold else "")))
    if result.best_trial is not None:
        best = result.summary[result.summary.trial == result.best_trial].iloc[0]
        print(f"best trial: {result.best_trial} (lr {best.lr:.4g}, val log loss {best.val_loss:.4f})")
    if result.verdict:
        print(_verdict(result.verdict))
    print(f"sweep_run_id: {result.parent_run_id}")
    print(fit(f"study: {result.study}"))
    _print_ui(cfg, result.experiment_id)


def print_pitfall_summary(result, cfg: DictConfig) -> None:
    """The two runs side by side, the computed explanation, where the comparison is."""
    from dropout_risk.pitfalls.explain import key_table
    from dropout_risk.tracking.store import runs_url

    print()
    print(f"pitfall: {result.name}")
    print(key_table(result))
    print()
    print("what the numbers show:")
    for line in result.explanation:
        print(fit(f"  - {line}", indent="  "))
    print()
    print(f"pitfall run_id: {result.pitfall_run_id}")
    print(f"healthy run_id: {result.healthy_run_id}  (each tagged counterpart=<the other>)")
    comparison = result.comparison
    print(fit(f"comparison: {comparison.out_dir} (reliability_grid.png, loss_curves.png, comparison.md, "
              "explanation.md)"))
    if comparison.comparison_run_id:
        print(f"comparison run_id: {comparison.comparison_run_id}")
        print(fit(f"  in the MLflow UI: {runs_url(comparison.comparison_experiment_id)}"))
