"""The trained model as an MLflow pyfunc: raw student columns in, risk out.

`DropoutRiskPyfunc.predict(context, frame)` takes the columns of the training file (minus the
target) as a pandas DataFrame, validates and encodes them with the run's own RawSchema (one-hot
levels and standardisation of its training split: data/schema.py), runs the MLP and returns, per
row, `dropout_probability` = sigmoid(logit), `calibrated_probability` = sigmoid(logit / T) with the
run's fitted temperature T (T = 1 without calibration) and `logit`. Its artifacts, read in
`load_context`: `schema` (JSON: the RawSchema, the network's widths and activation, T) and
`weights` (the network's state_dict, torch.save).
"""

from __future__ import annotations

import json

import mlflow.pyfunc
import numpy as np
import pandas as pd

from dropout_risk.data.schema import RawSchema

OUTPUT_COLUMNS = ("dropout_probability", "calibrated_probability", "logit")


class DropoutRiskPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        import torch

        from dropout_risk.model.mlp import MLP

        with open(context.artifacts["schema"], encoding="utf-8") as f:
            spec = json.load(f)
        self.schema = RawSchema.from_dict(spec["schema"])
        self.temperature = float(spec["temperature"])
        self.net = MLP(len(self.schema.feature_names), list(spec["hidden"]), spec["activation"])
        self.net.load_state_dict(torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True))
        self.net.eval()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """A DataFrame of the three risk columns, with `model_input`'s index."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.score(self.schema.encode(frame), frame.index)

    def score(self, x: np.ndarray, index=None) -> pd.DataFrame:
        import torch

        from dropout_risk.analysis.calibration import apply_temperature

        with torch.no_grad():
            logit = self.net(torch.from_numpy(x)).numpy()
        return pd.DataFrame({"dropout_probability": apply_temperature(logit, 1.0),
                             "calibrated_probability": apply_temperature(logit, self.temperature),
                             "logit": logit.astype(np.float64)}, index=index)
