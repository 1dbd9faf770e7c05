"""Train one model and track it in MLflow.

    python pipelines/train.py optim=sgd optim.lr=0.3 model.hidden=[64,32] trainer.max_epochs=30
"""

import hydra
from omegaconf import DictConfig

from dropout_risk.cli import hydra_overrides, preflight, print_run_summary, run_cli
from dropout_risk.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from dropout_risk.train import train  # after preflight: a bad override fails in ~1 s, not after imports

    def job() -> None:
        result = train(cfg, overrides=hydra_overrides())
        print_run_summary(result, cfg)

    run_cli(job)


if __name__ == "__main__":
    preflight()
    main()
