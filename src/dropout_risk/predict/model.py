"""The model to score with: a run's pyfunc model (`runs:/<id>/pyfunc_model`) or any model URI,
loaded with `mlflow.pyfunc.load_model` from the request's store."""

from __future__ import annotations

from dropout_risk.model.export import PYFUNC_MODEL_NAME
from dropout_risk.model.pyfunc import DropoutRiskPyfunc
from dropout_risk.predict.request import PredictError


def model_uri(req) -> str:
    return str(req.model_uri) if req.model_uri else f"runs:/{req.run_id}/{PYFUNC_MODEL_NAME}"


def load(req) -> tuple[str, DropoutRiskPyfunc]:
    """(uri, the model's python object); one-line PredictError when there is no such model."""
    import logging

    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from dropout_risk.tracking.store import check_tracking, missing_store

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its INFO lines on downloads
    uri = str(req.tracking.uri)
    check_tracking(uri)
    if missing_store(uri):
        raise PredictError(f"tracking.uri={uri}: no MLflow store there; pass tracking.uri=<the store the run was "
                           "logged to>, e.g. tracking.uri=sqlite:///mlruns/mlflow.db")
    target = model_uri(req)
    try:
        with _use_tracking_uri(uri):
            loaded = mlflow.pyfunc.load_model(target)
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        hint = (f"run {req.run_id} has no {PYFUNC_MODEL_NAME} (a run trained with tracking.log_pyfunc=true logs it; a "
                "sweep logs it for its best trial): check run_id and tracking.uri" if req.run_id else
                "check model_uri and tracking.uri")
        raise PredictError(f"cannot load the model {target} ({first}); {hint}") from None
    model = loaded.unwrap_python_model()
    if not isinstance(model, DropoutRiskPyfunc):
        raise PredictError(f"{target} is not a dropout-risk model ({type(model).__name__}): pass the "
                           f"{PYFUNC_MODEL_NAME} of a dropout-risk training run")
    return target, model
