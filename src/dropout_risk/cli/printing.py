"""What the pipelines print at the end: metric tables and run, sweep and pitfall summaries."""

from __future__ import annotations

from omegaconf import DictConfig

from dropout_risk.format import fmt

SMALL_FILE = 2000  # students: below this a plain run suggests cross-validation


def _interval(metrics: dict[str, float], key: str) -> str:
    lo, hi = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    return "" if lo is None or hi is None else f"[{fmt(lo)}, {fmt(hi)}]"


def metrics_table(metrics: dict[str, float], splits: tuple[str, ...] = ("val", "test"),
                  baselines: tuple[str, ...] | list[str] = ()) -> str:
    """Rows = metric names; columns = splits, the test metric's 95% interval (where computed) and
    each baseline's test value on the same rows."""
    names: list[str] = []
    for key in metrics:
        split, _, metric = key.partition("/")
        if split in splits and metric not in names and not metric.endswith(("_ci_low", "_ci_high")):
            names.append(metric)
    width = max(len(n) for n in names) if names else 6
    with_ci = "test" in splits and any(k.startswith("test/") and k.endswith("_ci_low") for k in metrics)
    heads = [*(f"{s:>10}" for s in splits), *([f"{'test 95% CI':>18}"] if with_ci else []),
             *(f"{b + ' test':>12}" for b in baselines)]
    lines = [f"{'metric':<{width}}  " + "  ".join(heads)]
    for n in names:
        cells = [f"{fmt(metrics[f'{s}/{n}']) if f'{s}/{n}' in metrics else '':>10}" for s in splits]
        if with_ci:
            cells.append(f"{_interval(metrics, f'test/{n}'):>18}")
        cells += [f"{fmt(metrics[f'baseline/{b}/test/{n}']) if f'baseline/{b}/test/{n}' in metrics else '':>12}"
                  for b in baselines]
        lines.append(f"{n:<{width}}  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def print_run_summary(result, cfg: DictConfig) -> None:
    from dropout_risk.tracking.store import runs_url, ui_command

    m = result.metrics
    trained, reported = int(m["epochs_completed"]), int(m.get("reported_epoch", m["epochs_completed"]))
    stopping = cfg.trainer.early_stopping
    epochs = (f"{trained} epochs, reporting the best: epoch {reported} (early stopping on val log loss, "
              f"patience {stopping.patience})" if stopping.enabled and result.outcome != "diverged"
              else f"{trained} epochs" + ("" if result.outcome == "diverged" else ", reporting the last (early stopping off)"))
    print()
    print(f"run: {result.run_name}   outcome: {result.outcome}"
          + (f" at step {result.diverged_at_step}" if result.diverged_at_step else "")
          + f"   fit: {m['time/fit_s']:.2f} s, {epochs}")
    print(metrics_table(m, baselines=result.baselines))
    if "bayes/log_loss_bayes" in m:
        print(f"Bayes-optimal (p_true) on test: log loss {fmt(m['bayes/log_loss_bayes'])}, "
              f"AUROC {fmt(m['bayes/auroc_bayes'])}")
    if result.verdict:
        print(result.verdict)
    if 0 < result.n_students < SMALL_FILE and not cfg.data.cv_folds:
        print(f"hint: {result.n_students:,} students, so the test split holds ~{round(result.n_students * cfg.data.test_frac)}"
              f" and one split's numbers are noisy: data.cv_folds=5 tests every student once (5-fold cross-validation)")
    print(f"run_id: {result.run_id}")
    print(f"MLflow UI: {ui_command(cfg.tracking.uri)}")
    print(f"  then open {runs_url(result.experiment_id)}")


def cv_table(mean: dict[str, float], sd: dict[str, float], baselines: list[str]) -> str:
    """Rows = metric names; columns = val and test as mean ± sd over folds, then each baseline's test."""
    names: list[str] = []
    for key in mean:
        split, _, metric = key.partition("/")
        if split in ("val", "test") and metric not in names and not metric.endswith(("_ci_low", "_ci_high")):
            names.append(metric)
    width = max((len(n) for n in names), default=6)

    def cell(key: str) -> str:
        return f"{fmt(mean[key])} ± {fmt(sd[key])}" if key in mean else ""

    heads = [f"{'val':>17}", f"{'test':>17}", *(f"{b + ' test':>17}" for b in baselines)]
    lines = [f"{'metric':<{width}}  " + "  ".join(heads)]
    for n in names:
        cells = [f"{cell(f'val/{n}'):>17}", f"{cell(f'test/{n}'):>17}",
                 *(f"{cell(f'baseline/{b}/test/{n}'):>17}" for b in baselines)]
        lines.append(f"{n:<{width}}  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def print_cv_summary(result, cfg: DictConfig) -> None:
    from dropout_risk.tracking.store import runs_url, ui_command

    folds = result.folds
    print()
    print(f"cross-validation: {result.run_name}   {len(folds)} folds   outcomes: "
          + ", ".join(f.outcome for f in folds))
    print("mean ± sd over folds (each fold's test split is a different fifth of the students)"
          .replace("a different fifth", f"a different 1/{len(folds)}"))
    print(cv_table(result.mean, result.sd, folds[0].baselines))
    for key in ("vs_baseline/test/auroc_diff", "vs_baseline/test/log_loss_diff"):
        if key in result.mean:
            print(f"MLP - best baseline, {key.split('/')[-1][:-5]} on test: {result.mean[key]:+.4f} ± "
                  f"{result.sd[key]:.4f} over folds")
    print(f"cv run_id: {result.run_id}  (folds: {', '.join(f.run_id for f in folds)})")
    print(f"MLflow UI: {ui_command(cfg.tracking.uri)}")
    print(f"  then open {runs_url(result.experiment_id)}")


def print_sweep_summary(result, cfg: DictConfig) -> None:
    from dropout_risk.tracking.store import runs_url, ui_command

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
    if result.verdict:
        print(result.verdict)
    print(f"sweep_run_id: {result.parent_run_id}")
    print(f"study: {result.study}")
    print(f"MLflow UI: {ui_command(cfg.tracking.uri)}")
    print(f"  then open {runs_url(result.experiment_id)}")


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
        print(f"  - {line}")
    print()
    print(f"pitfall run_id: {result.pitfall_run_id}")
    print(f"healthy run_id: {result.healthy_run_id}  (each tagged counterpart=<the other>)")
    comparison = result.comparison
    print(f"comparison: {comparison.out_dir} (reliability_grid.png, loss_curves.png, comparison.md, explanation.md)")
    if comparison.comparison_run_id:
        print(f"comparison run_id: {comparison.comparison_run_id}")
        print(f"  in the MLflow UI: {runs_url(comparison.comparison_experiment_id)}")
