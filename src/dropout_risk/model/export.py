"""`log_pyfunc_model`: a run's trained network as an MLflow Model (model/pyfunc.py) in that run,
with a signature (the raw columns in, the three risk columns out), an input example (typical
training students, not real ones), explicit pip requirements (no inference: it would import and
scan the environment) and, with `register_as`, a version in the Model Registry.

The model is logged as `mlflow.pyfunc.log_model(name=PYFUNC_MODEL_NAME)` logs it (through
`Model.log(flavor=mlflow.pyfunc)` on a LoggedModel created in the run's experiment): an MLflow 3 LoggedModel
linked to the run, loadable as `runs:/<run id>/pyfunc_model` or `models:/<model id>`.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch

from dropout_risk.data.module import StudentDataModule
from dropout_risk.data.schema import raw_schema
from dropout_risk.model.module import DropoutRiskModule
from dropout_risk.model.pyfunc import OUTPUT_COLUMNS, DropoutRiskPyfunc
from dropout_risk.tracking.run import Run

PYFUNC_MODEL_NAME = "pyfunc_model"


def _requirements() -> list[str]:
    import mlflow
    import numpy
    import pandas

    # dropout-risk itself must be installed where the model is served (it holds the model's class)
    torch_version = torch.__version__.split("+")[0]
    return [f"mlflow=={mlflow.__version__}", f"torch=={torch_version}", f"numpy=={numpy.__version__}",
            f"pandas=={pandas.__version__}", "dropout-risk"]


def _signature(schema):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec(c.dtype, c.name) for c in schema.columns]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", c) for c in OUTPUT_COLUMNS]))


def log_pyfunc_model(run: Run, module: DropoutRiskModule, dm: StudentDataModule, cfg, temperature: float | None,
                     register_as: str | None = None) -> str:
    """Log `module`'s network (its current weights) with `dm`'s schema and standardisation as the
    pyfunc model of `run`; returns its model URI (`runs:/<run id>/pyfunc_model`). `temperature`:
    the run's fitted T (None: no calibration, T = 1)."""
    import mlflow.pyfunc
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    schema = raw_schema(dm.data, dm.splits["train"], dm.feature_names, dm.mean, dm.std)
    spec = {"schema": schema.to_dict(), "hidden": list(cfg.model.hidden), "activation": str(cfg.model.activation),
            "temperature": float(temperature) if temperature is not None else 1.0}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "schema.json").write_text(json.dumps(spec), encoding="utf-8")
        torch.save({k: v.detach().cpu() for k, v in module.net.state_dict().items()}, Path(tmp) / "weights.pt")
        # The LoggedModel is created in the run's experiment and linked to the run here: the fluent
        # mlflow.pyfunc.log_model would put it in the process's active experiment and copy every
        # metric history of the run onto it (one query per metric: most of its cost).
        model = run.client.create_logged_model(run.client.get_run(run.run_id).info.experiment_id,
                                               name=PYFUNC_MODEL_NAME, source_run_id=run.run_id)
        run.client.log_outputs(run.run_id, [LoggedModelOutput(model.model_id, step=0)])
        pyfunc_log = logging.getLogger("mlflow.pyfunc")  # its warning on cloudpickle, every time: known, and why
        level = pyfunc_log.level
        pyfunc_log.setLevel(logging.ERROR)
        try:
            _log(Model, mlflow.pyfunc, run, model.model_id, tmp, schema, register_as)
        except BaseException:
            run.client.delete_logged_model(model.model_id)  # no empty model for runs:/ to find first
            raise
        finally:
            pyfunc_log.setLevel(level)
    return f"runs:/{run.run_id}/{PYFUNC_MODEL_NAME}"


def _log(Model, flavor, run: Run, model_id: str, tmp: str, schema, register_as: str | None) -> None:
    import pandas as pd
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(run.client.tracking_uri):  # the run's store, not the process's global one
        Model.log(
            None,
            name=PYFUNC_MODEL_NAME,
            flavor=flavor,
            flavor_name="pyfunc.CustomPythonModel",
            model_id=model_id,
            python_model=DropoutRiskPyfunc(),
            artifacts={"schema": str(Path(tmp) / "schema.json"), "weights": str(Path(tmp) / "weights.pt")},
            signature=_signature(schema),
            input_example=pd.DataFrame(schema.example, columns=schema.names),
            pip_requirements=_requirements(),
            registered_model_name=register_as or None,
        )


def log_pyfunc_from_run(run: Run, register_as: str | None = None) -> str:
    """The pyfunc model of a run that has finished, rebuilt from its own `config/config.yaml` and
    `model/model.pt` (the best trial of a sweep whose trials skip it, or a run from before
    tracking.log_pyfunc); returns its model URI. The split and standardisation are recomputed from
    the run's data and seed (deterministic: the same as at training). A run that has one already
    keeps it (a sweep's report run again logs nothing twice)."""
    from dropout_risk.config.saved import load_config_text
    from dropout_risk.data.loaders import load_data
    from dropout_risk.tracking.names import CONFIG_ARTIFACT, MODEL_ARTIFACT

    logged = _logged_pyfunc(run)
    if logged is not None:  # train() logged it already (tracking.log_pyfunc): register it if asked
        if register_as:
            _register(run, logged, register_as)
        return f"runs:/{run.run_id}/{PYFUNC_MODEL_NAME}"
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(run.client.download_artifacts(run.run_id, CONFIG_ARTIFACT, tmp)).read_text(encoding="utf-8")
        # the run's own file, written by this package (it holds numpy arrays: not weights_only)
        saved = torch.load(run.client.download_artifacts(run.run_id, MODEL_ARTIFACT, tmp), weights_only=False)
    cfg = load_config_text(text, f"the {CONFIG_ARTIFACT} of run {run.run_id}")
    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    module = DropoutRiskModule(n_features=dm.n_features, hidden=list(cfg.model.hidden),
                               activation=cfg.model.activation, loss=cfg.loss.name, optimizer=None)
    module.net.load_state_dict(saved["state_dict"])
    temperature = run.client.get_run(run.run_id).data.metrics.get("temperature")
    return log_pyfunc_model(run, module, dm, cfg, temperature, register_as)


def has_pyfunc_model(run: Run) -> bool:
    """Whether `run` has a logged model named PYFUNC_MODEL_NAME."""
    return _logged_pyfunc(run) is not None


def _logged_pyfunc(run: Run):
    experiment_id = run.client.get_run(run.run_id).info.experiment_id
    models = run.client.search_logged_models([experiment_id], filter_string=f"name = '{PYFUNC_MODEL_NAME}'",
                                             max_results=1000)
    return next((m for m in models if m.source_run_id == run.run_id), None)


def _register(run: Run, logged, name: str) -> None:
    """A version of registered model `name` for the run's logged model, unless it has one."""
    from mlflow.exceptions import MlflowException

    try:
        run.client.create_registered_model(name)
    except MlflowException:  # exists
        pass
    versions = run.client.search_model_versions(f"name = '{name}'")
    if not any(v.run_id == run.run_id for v in versions):
        run.client.create_model_version(name, source=logged.artifact_location, run_id=run.run_id,
                                        model_id=logged.model_id)
