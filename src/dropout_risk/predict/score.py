"""Scoring a CSV: read through the training loader (separator, encoding, header, field counts),
checked and encoded by the model's own schema, risk columns added; and the summary."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from dropout_risk.data.csv_read import read_frame
from dropout_risk.model.pyfunc import OUTPUT_COLUMNS, DropoutRiskPyfunc

SUMMARY_COLUMN = "calibrated_probability"


def score_csv(model: DropoutRiskPyfunc, path: str | os.PathLike[str], sep: str | None = None) -> pd.DataFrame:
    """The file's rows as read, with the risk columns appended. Raises DataError (one line) for a
    file the training loader or the model's schema refuses."""
    frame, p, _, _ = read_frame(path, sep)
    return score_frame(model, frame, f"data.path={str(p)!r}")


def score_frame(model: DropoutRiskPyfunc, frame: pd.DataFrame, where: str = "input") -> pd.DataFrame:
    scores = model.score(model.schema.encode(frame, where), frame.index)
    return pd.concat([frame, scores], axis=1)


def summary(scored: pd.DataFrame, column: str = SUMMARY_COLUMN) -> dict[str, float]:
    risk = scored[column].to_numpy(dtype=np.float64)
    p10, p50, p90 = np.quantile(risk, [0.1, 0.5, 0.9])
    return {"count": float(len(risk)), "p10": float(p10), "p50": float(p50), "p90": float(p90),
            "mean": float(risk.mean())}


def write_scores(scored: pd.DataFrame, out: str | os.PathLike[str]) -> Path:
    """Written to a temporary file beside `out`, then renamed: `out` is complete or untouched."""
    out = Path(out).expanduser()
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        scored.to_csv(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


__all__ = ["OUTPUT_COLUMNS", "score_csv", "score_frame", "summary", "write_scores"]
