"""Scoring with the logged pyfunc model: the run's own test students give the run's logged test
logits (to 1e-6) in-process and through mlflow.pyfunc.load_model; temperature; the registry; bad
input (one line, exit 2, nothing written); the pipeline end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import predict_request  # tests/predict/conftest.py
from helpers import run_pipeline
from mlflow import MlflowClient

from dropout_risk.analysis.calibration import apply_temperature
from dropout_risk.cli.run import run_cli
from dropout_risk.predict.model import load
from dropout_risk.predict.run import run_predict
from dropout_risk.predict.score import score_frame

RISK = ["dropout_probability", "calibrated_probability", "logit"]


def _features(trained) -> pd.DataFrame:
    target = trained.cfg.data.get("target")
    return trained.test_rows.drop(columns=[target]) if target in trained.test_rows else trained.test_rows


@pytest.mark.parametrize("which", ["cohort_run", "csv_run"])
def test_the_runs_own_test_rows_give_its_logged_test_logits(which, request):
    trained = request.getfixturevalue(which)
    _, model = load(predict_request(trained.store, f"run_id={trained.run_id}", "data.path=x.csv"))
    scored = score_frame(model, trained.test_rows)  # the target column is accepted and left alone
    np.testing.assert_allclose(scored["logit"].to_numpy(), trained.test_logit, rtol=0, atol=1e-6)
    assert list(scored.columns) == [*trained.test_rows.columns, *RISK]
    assert trained.temperature is not None  # calibration=temperature by default
    np.testing.assert_allclose(scored["calibrated_probability"], apply_temperature(trained.test_logit, trained.temperature),
                               atol=1e-6)
    np.testing.assert_allclose(scored["dropout_probability"], apply_temperature(trained.test_logit, 1.0), atol=1e-6)


def test_mlflow_pyfunc_load_model_scores_the_raw_columns(cohort_run):
    import mlflow.pyfunc
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(cohort_run.store["uri"]):
        loaded = mlflow.pyfunc.load_model(f"runs:/{cohort_run.run_id}/pyfunc_model")
        out = loaded.predict(_features(cohort_run))
        info = mlflow.models.get_model_info(f"runs:/{cohort_run.run_id}/pyfunc_model")
    assert list(out.columns) == RISK
    np.testing.assert_allclose(out["logit"].to_numpy(), cohort_run.test_logit, rtol=0, atol=1e-6)
    assert [c["name"] for c in info.signature.inputs.to_dict()] == list(_features(cohort_run).columns)
    assert [c["name"] for c in info.signature.outputs.to_dict()] == RISK
    assert info.saved_input_example_info is not None


def test_without_calibration_the_calibrated_probability_is_the_raw_one(tmp_path, new_store):
    from conftest import compose_cfg, train_with_pyfunc

    store = new_store(tmp_path / "mlruns")
    trained = train_with_pyfunc(compose_cfg(store, "calibration=none", "data.n_students=400"), tmp_path,
                                register_as="dropout-risk-test")
    _, model = load(predict_request(store, "model_uri=models:/dropout-risk-test/1", "data.path=x.csv"))
    scored = score_frame(model, trained.test_rows)
    assert trained.temperature is None
    np.testing.assert_array_equal(scored["calibrated_probability"], scored["dropout_probability"])
    np.testing.assert_allclose(scored["logit"].to_numpy(), trained.test_logit, atol=1e-6)


def _bad(frame: pd.DataFrame, how: str) -> pd.DataFrame:
    frame = frame.head(20).copy()
    if how == "missing column":
        return frame.drop(columns=["grade_trend"])
    if how == "extra column":
        return frame.assign(shoe_size=42)
    if how == "unseen category":
        frame.loc[3, "programme"] = "medicine"
        return frame
    if how == "non-numeric value":
        frame["absence_rate"] = frame["absence_rate"].astype(object)
        frame.loc[5, "absence_rate"] = "high"
        return frame
    frame.loc[2, "prev_grade_avg"] = np.nan  # empty cell
    return frame


@pytest.mark.parametrize("how, says", [
    ("missing column", "missing column(s) 'grade_trend'"),
    ("extra column", "column(s) 'shoe_size' were not in the training data"),
    ("unseen category", "category 'medicine' was never seen in training"),
    ("non-numeric value", "'high' is not a number"),
    ("empty cell", "column 'prev_grade_avg' data row 3 is empty"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(csv_run, tmp_path, capsys, how, says):
    path = tmp_path / "new.csv"
    _bad(csv_run.test_rows, how).to_csv(path, index=False)
    out = tmp_path / "scores.csv"
    req = predict_request(csv_run.store, f"run_id={csv_run.run_id}", f"data.path={path}", f"out={out}")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: run_predict(req))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert not out.exists()


def test_a_run_without_a_pyfunc_model_is_one_line(cohort_run, tmp_path, capsys):
    req = predict_request(cohort_run.store, "run_id=0123456789abcdef0123456789abcdef", f"data.path={tmp_path}/x.csv",
                          f"out={tmp_path}/s.csv")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: run_predict(req))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "has no pyfunc_model" in err, err


def test_the_pipeline_scores_a_csv_end_to_end(csv_run, tmp_path):
    path = tmp_path / "new.csv"
    features = csv_run.test_rows.drop(columns=["status"])
    features.to_csv(path, index=False)
    out = tmp_path / "scores.csv"
    proc = run_pipeline("predict.py", f"run_id={csv_run.run_id}", f"data.path={path}", f"out={out}",
                        f"tracking.uri={csv_run.store['uri']}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    scored = pd.read_csv(out)
    assert list(scored.columns) == [*features.columns, *RISK]
    np.testing.assert_allclose(scored["logit"].to_numpy(), csv_run.test_logit, atol=1e-6)
    p = scored["calibrated_probability"].to_numpy()
    assert f"scored {len(features)} students -> {out}" in " ".join(proc.stdout.split())  # a long line wraps
    assert f"p50 {np.quantile(p, 0.5):.3f}" in proc.stdout and f"mean {p.mean():.3f}" in proc.stdout


def test_a_run_with_a_pyfunc_model_keeps_it(cohort_run):
    from mlflow import MlflowClient

    from dropout_risk.model.export import has_pyfunc_model, log_pyfunc_from_run
    from dropout_risk.tracking.run import Run

    client = MlflowClient(cohort_run.store["uri"])
    run = Run(client, cohort_run.run_id, claim=False)
    assert has_pyfunc_model(run)
    before = client.search_logged_models([client.get_run(cohort_run.run_id).info.experiment_id])
    assert log_pyfunc_from_run(run) == cohort_run.uri
    assert len(client.search_logged_models([client.get_run(cohort_run.run_id).info.experiment_id])) == len(before)


def test_train_logs_the_pyfunc_model_itself_by_default(tmp_path, new_store):
    """tracking.log_pyfunc=true (the default outside sweeps): report_model logs `pyfunc_model` and,
    with tracking.register_as, a registry version; a diverged run logs none."""
    from conftest import compose_cfg

    from dropout_risk.model.export import has_pyfunc_model
    from dropout_risk.tracking.run import Run
    from dropout_risk.training.train import train

    store = new_store(tmp_path / "mlruns")
    r = train(compose_cfg(store, "data.n_students=400", "tracking.log_pyfunc=true", "tracking.register_as=dr-own"))
    client = MlflowClient(store["uri"])
    assert has_pyfunc_model(Run(client, r.run_id, claim=False))
    assert [v.run_id for v in client.search_model_versions("name = 'dr-own'")] == [r.run_id]
    bad = train(compose_cfg(store, "data.n_students=400", "tracking.log_pyfunc=true", "optim=sgd", "optim.lr=1e4"))
    assert bad.outcome == "diverged" and not has_pyfunc_model(Run(client, bad.run_id, claim=False))
