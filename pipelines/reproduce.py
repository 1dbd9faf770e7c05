"""Re-run a logged run or a saved config through the same train(cfg) and verify the result.

    python pipelines/reproduce.py run_id=<id>                      # re-run a logged run, compare, report
    python pipelines/reproduce.py run_id=<sweep run id> all=true   # a sweep's trials (default: the best)
    python pipelines/reproduce.py config=path/to/config.yaml       # re-run a saved config file
    python pipelines/reproduce.py run_id=<id> tolerance=1e-6       # another machine: not bit-identical

Prints a table (metric, original, re-run, difference, verdict), the weight-hash row, the verdict
and `run_id: <new id>`. Exit 0: exact or within tolerance; 1: mismatch; 2: bad input (one line).
"""

import sys

import hydra
from omegaconf import DictConfig

from dropout_risk.cli.preflight import preflight
from dropout_risk.cli.run import run_cli
from dropout_risk.config.schema import register_configs
from dropout_risk.errors import ReproduceError
from dropout_risk.reproduce.request import check_request, normalize_argv

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="reproduce")
def main(cfg: DictConfig) -> None:
    try:
        check_request(cfg)  # a bad request ends here, before torch, Lightning and MLflow load
    except ReproduceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

    def job() -> int:
        from dropout_risk.reproduce.run import run_reproduce

        try:
            return run_reproduce(cfg, echo=lambda msg: print(msg, flush=True))
        except ReproduceError as exc:  # here, not in run_cli: its error lookup imports the sweep (torch)
            print(f"error: {exc}", file=sys.stderr)
            return 2

    run_cli(job)


if __name__ == "__main__":
    sys.argv[1:] = normalize_argv(sys.argv[1:])
    preflight("reproduce")
    main()
