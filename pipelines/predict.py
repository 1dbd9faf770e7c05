"""Score new students with a logged model: the input rows plus the risk columns, and a summary.

    python pipelines/predict.py run_id=<id> data.path=new.csv out=scores.csv
    python pipelines/predict.py model_uri=models:/dropout-risk/1 data.path=new.csv out=scores.csv

The CSV goes through the same loader and checks as training and the model's own schema (its
columns, categories and standardisation). Exit 0: scored and written; 2: bad input (one
`error:` line, nothing written).
"""

import sys

import hydra
from omegaconf import DictConfig

from dropout_risk.cli.preflight import preflight
from dropout_risk.cli.run import run_cli
from dropout_risk.config.schema import register_configs
from dropout_risk.predict.request import PredictError, check_request, normalize_argv

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    try:
        check_request(cfg)  # a bad request ends here, before torch and MLflow load
    except PredictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

    def job() -> None:
        from dropout_risk.predict.run import run_predict

        run_predict(cfg, echo=lambda msg: print(msg, flush=True))

    run_cli(job)


if __name__ == "__main__":
    sys.argv[1:] = normalize_argv(sys.argv[1:])
    preflight("predict")
    main()
