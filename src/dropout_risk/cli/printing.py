"""What the pipelines print at the end: metric tables and run, sweep and pitfall summaries."""

from __future__ import annotations

from omegaconf import DictConfig

from dropout_risk.format import fmt


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
    from dropout_risk.tracking.store import runs_url, ui_command

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
