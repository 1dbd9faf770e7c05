"""run_predict(req): load the model, score the CSV, write `out`, print the summary (lines of at most
console.WIDTH columns)."""

from __future__ import annotations

from collections.abc import Callable

from dropout_risk.console import fit
from dropout_risk.predict.model import load
from dropout_risk.predict.request import check_request
from dropout_risk.predict.score import SUMMARY_COLUMN, score_csv, summary, write_scores


def run_predict(req, echo: Callable[[str], None] = print) -> dict[str, float]:
    """Score `req.data.path` with the model of `req` (run_id or model_uri) into `req.out`.
    Bad input raises PredictError/DataError (one line) before anything is written."""
    check_request(req)
    uri, model = load(req)
    scored = score_csv(model, req.data.path, req.data.sep)
    out = write_scores(scored, req.out)
    s = summary(scored)
    echo(fit(f"model: {uri}"))
    echo(fit(f"scored {int(s['count'])} students -> {out}"))
    echo(f"{SUMMARY_COLUMN}: p10 {s['p10']:.3f}  p50 {s['p50']:.3f}  p90 {s['p90']:.3f}  mean {s['mean']:.3f}")
    return s
