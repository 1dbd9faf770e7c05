"""The learning-rate divergence sweep: scan + refine, charted against 2/lambda_max.

    python pipelines/sweep.py                                  # AdamW, scan + refine on the cohort
    python pipelines/sweep.py optim=sgd sweep.n_scan=32 sweep.lr_min=1e-3 sweep.lr_max=100
    python pipelines/sweep.py sweep.n_workers=2                # two worker processes
    python pipelines/sweep.py sweep.study=my-study             # run again after a crash: it resumes
    python pipelines/sweep.py experiment=pitfall_lr_divergence  # the pitfall preset: SGD scan, the
                                                               # diverged and converged runs compared
"""

import hydra
from omegaconf import DictConfig

from dropout_risk.cli.preflight import preflight
from dropout_risk.cli.printing import print_pitfall_summary, print_sweep_summary
from dropout_risk.cli.run import freeze_imports, hydra_overrides, run_cli
from dropout_risk.config.schema import register_configs
from dropout_risk.config.validate import check_pipeline
from dropout_risk.sweep.workers import start_local_workers, stop_workers

register_configs()

# Local workers started as soon as the command line composed (preflight), so that their ~5 s of
# imports run beside everything this process does before its first trial.
_started: list = []


@hydra.main(version_base="1.3", config_path="../conf", config_name="sweep")
def main(cfg: DictConfig):
    def job():
        check_pipeline(cfg, "sweep")
        workers = list(_started) or start_local_workers(cfg)
        _started.clear()  # the next job of a multirun starts its own
        try:
            from dropout_risk.sweep.run import run_sweep
        except BaseException:
            stop_workers(workers)
            raise
        result = run_sweep(cfg, overrides=hydra_overrides(), log=lambda msg: print(msg, flush=True),
                           workers=workers, on_imported=freeze_imports)
        if result is not None:
            print_sweep_summary(result, cfg)
            if cfg.pitfall.name:
                from dropout_risk.pitfalls.run import run_sweep_pitfall

                print_pitfall_summary(run_sweep_pitfall(cfg, result), cfg)
        return result

    return run_cli(job)


def _start(cfg: DictConfig) -> None:
    """As soon as the command line composed: say what starts (the imports take seconds), start the workers."""
    sw = cfg.sweep
    scan = f"{len(sw.lr_over_gd_threshold)} multiples of 2/lambda_max" if sw.lr_over_gd_threshold else f"{sw.n_scan} lrs"
    print(f"sweep: {scan} x {sw.seeds} seed(s) + {sw.n_refine} refine, {sw.n_workers} worker(s); "
          "loading torch, Lightning, MLflow", flush=True)
    _started.extend(start_local_workers(cfg))


if __name__ == "__main__":
    try:
        preflight("sweep", on_composed=_start)
    except BaseException:  # a bad config: the workers must not wait for a study that never comes
        stop_workers(_started)
        raise
    main()
