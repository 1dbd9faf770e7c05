"""Train one model and track it in MLflow.

    python pipelines/train.py optim=sgd optim.lr=0.3 model.hidden=[64,32] trainer.max_epochs=30
    python pipelines/train.py experiment=pitfall_no_zero_grad   # a pitfall preset: the pitfall run,
    python pipelines/train.py experiment=pitfall_loss_only      # its healthy counterpart, compared
    python pipelines/train.py data=csv data.path=F ... data.cv_folds=5   # 5-fold cross-validation
    python pipelines/train.py -m optim.lr=1e-3,1e-2,1e-1   # one job per lr, nested under one parent run
"""

import hydra
from omegaconf import DictConfig

from dropout_risk.cli.multirun import job_tracking
from dropout_risk.cli.preflight import preflight
from dropout_risk.cli.printing import print_cv_summary, print_pitfall_summary, print_run_summary
from dropout_risk.cli.run import freeze_imports, hydra_overrides, run_cli
from dropout_risk.config.schema import register_configs
from dropout_risk.config.validate import check_pipeline

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig):
    # imported after preflight: a bad override fails in ~1 s, not after the imports
    from dropout_risk.pitfalls.run import run_train_pitfall
    from dropout_risk.training.cv import cross_validate
    from dropout_risk.training.train import train

    freeze_imports()

    def job():
        check_pipeline(cfg, "train")
        if cfg.pitfall.name:
            result = run_train_pitfall(cfg, hydra_overrides())
            print_pitfall_summary(result, cfg)
            return result
        if cfg.data.cv_folds >= 2 and cfg.data.cv_fold is None:
            result = cross_validate(cfg, hydra_overrides())
            print_cv_summary(result, cfg)
            return result
        result = train(cfg, overrides=hydra_overrides(), **job_tracking())  # -m: nested under the multirun's parent
        print_run_summary(result, cfg)
        return result

    return run_cli(job)


if __name__ == "__main__":
    preflight()
    main()
