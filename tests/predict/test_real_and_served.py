"""The UCI dropout file (shared data, never copied into the project) trains and scores; and the
model served by `mlflow models serve` answers over HTTP (slow)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_cfg, predict_request, train_with_pyfunc
from helpers import MLFLOW, UCI_DROPOUT_CSV, shared_file, start_mlflow_server, stop_process_group

from dropout_risk.predict.run import run_predict


def test_the_uci_file_trains_and_scores(tmp_path, new_store):
    from dropout_risk.data.csv_read import read_frame

    path = shared_file(UCI_DROPOUT_CSV)
    store = new_store(tmp_path / "mlruns")
    cfg = compose_cfg(store, "data=uci_dropout", f"data.path={path}", "data.early_warning=true")
    trained = train_with_pyfunc(cfg, tmp_path, raw_frame=read_frame(path, ";")[0])
    # the file's own format: every column (the dropped 2nd-semester ones and Target are accepted and left alone)
    new = tmp_path / "new.csv"
    trained.test_rows.to_csv(new, index=False, sep=";")
    out = tmp_path / "scores.csv"
    lines: list[str] = []
    summary = run_predict(predict_request(store, f"run_id={trained.run_id}", f"data.path={new}", f"out={out}"),
                          echo=lines.append)
    scored = pd.read_csv(out)
    assert summary["count"] == len(trained.test_rows) == len(scored)
    np.testing.assert_allclose(scored["logit"].to_numpy(), trained.test_logit, atol=1e-6)
    assert 0.1 < summary["mean"] < 0.6  # about a third dropped out
    assert any(line.startswith("calibrated_probability: p10") for line in lines)


def _ping(base: str) -> bool:
    with urllib.request.urlopen(f"{base}/ping", timeout=2) as resp:
        return resp.status == 200


def _serve(uri: str, store_uri: str, cwd):
    """`mlflow models serve --env-manager local` on a free port (a new one if another process took it
    first); (process, port) once /ping answers."""
    # --env-manager local runs `uvicorn` from PATH: the venv's
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri,
           "PATH": f"{Path(MLFLOW).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return start_mlflow_server(["--env-manager", "local", "-m", uri], cwd=cwd, env=env, timeout=180, probe=_ping,
                               command=("models", "serve"), listening_line=r"127\.0\.0\.1:{port}\b")


@pytest.mark.slow
def test_the_served_model_scores_two_rows_over_http(cohort_run, tmp_path):
    proc, port = _serve(cohort_run.uri, cohort_run.store["uri"], tmp_path)
    try:
        rows = cohort_run.test_rows.head(2)
        body = json.dumps({"dataframe_split": rows.to_dict(orient="split")}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer = json.loads(resp.read())
    finally:
        stop_process_group(proc)
    predictions = answer["predictions"]
    assert len(predictions) == 2 and set(predictions[0]) == {"dropout_probability", "calibrated_probability", "logit"}
    np.testing.assert_allclose([p["logit"] for p in predictions], cohort_run.test_logit[:2], atol=1e-6)
