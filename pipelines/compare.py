"""Compare tracked runs: reliability diagrams side by side, loss curves, a table of the params
that differ and every final metric; saved to a folder and logged as one MLflow run.

    python pipelines/compare.py runs=[<id1>,<id2>,<id3>]
    python pipelines/compare.py sweep=<sweep_run_id>
    python pipelines/compare.py filter="metrics.\\`val/auroc\\` > 0.8" max_runs=8

The config is conf/compare.yaml, served from the ConfigStore (see register_compare_config).
"""

import sys

import hydra
from omegaconf import DictConfig

from dropout_risk.cli.run import run_cli
from dropout_risk.compare.request import normalize_argv, preflight, register_compare_config
from dropout_risk.compare.run import run_compare

register_compare_config()


@hydra.main(version_base="1.3", config_path=None, config_name="compare")
def main(cfg: DictConfig) -> None:
    run_cli(lambda: run_compare(cfg))


if __name__ == "__main__":
    sys.argv[1:] = normalize_argv(sys.argv[1:])
    preflight()
    main()
