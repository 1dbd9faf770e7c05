"""The comparison table: the params that differ and every final metric, as CSV and markdown."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dropout_risk.compare.fetch import RunRecord
from dropout_risk.format import fmt
from dropout_risk.tracking.names import CONVERGED

_FIRST_METRICS = ("loss", "log_loss", "auroc", "auprc", "brier", "ece", "ece_adaptive", "mce", "accuracy")


def differing_params(records: Sequence[RunRecord]) -> list[str]:
    """Param keys whose value is not the same in every run (absent counts as a value), except
    those that only repeat the run name (tracking.run_name of sweep trials)."""
    keys = sorted({k for r in records for k in r.params})
    return [k for k in keys if len({r.params.get(k) for r in records}) > 1
            and not all(r.params.get(k) == r.name for r in records)]


def _metric_order(keys: Iterable[str]) -> list[str]:
    def rank(key: str) -> tuple:
        split, _, name = key.partition("/")
        group = {"val": 0, "test": 1}.get(split, 3 if "/" in key else 2)  # val, test, temperature..., others
        base = name.removesuffix("_calibrated")
        first = _FIRST_METRICS.index(base) if base in _FIRST_METRICS else len(_FIRST_METRICS)
        return (group, split if group == 3 else "", first, base, name.endswith("_calibrated"), key)

    return sorted(set(keys), key=rank)


def comparison_table(records: Sequence[RunRecord], differing: Sequence[str]) -> pd.DataFrame:
    """One row per run: id, name, experiment, outcome, the params that differ, every final metric."""
    metrics = _metric_order(k for r in records for k in r.metrics)
    rows = []
    for r in records:
        row: dict[str, Any] = {"run_id": r.run_id, "run_name": r.name, "experiment": r.experiment,
                               "outcome": r.outcome}
        row.update({k: r.params.get(k) for k in differing})
        row.update({k: r.metrics.get(k) for k in metrics})
        rows.append(row)
    columns = ["run_id", "run_name", "experiment", "outcome", *differing, *metrics]
    frame = pd.DataFrame(rows, columns=columns)
    for k in metrics:
        frame[k] = pd.to_numeric(frame[k], errors="coerce")
    return frame


def _rows(records: Sequence[RunRecord], frame: pd.DataFrame, digits: int | None) -> list[list[str]]:
    """Cells as text: a metric a run lacks is empty, a metric it logged as NaN is `nan`."""
    out = []
    for rec, (_, row) in zip(records, frame.iterrows(), strict=True):
        cells = []
        for col in frame.columns:
            value = row[col]
            if col in rec.metrics:
                v = float(rec.metrics[col])
                cells.append(repr(v) if digits is None else (f"{v:.{digits}g}" if math.isfinite(v) else str(v)))
            else:
                cells.append("" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value))
        out.append(cells)
    return out


def write_csv(path: Path, records: Sequence[RunRecord], frame: pd.DataFrame) -> None:
    """Full precision (repr of the float MLflow returned), empty where a run lacks the metric."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(frame.columns)
        writer.writerows(_rows(records, frame, digits=None))


def markdown_table(records: Sequence[RunRecord], frame: pd.DataFrame, digits: int = 4) -> str:
    """The table as markdown; a metric with a 95% interval (`<m>_ci_low`, `<m>_ci_high`) is one
    cell `value [low, high]` (the CSV keeps the three columns)."""
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    columns = list(frame.columns)
    with_ci = {c for c in columns if f"{c}_ci_low" in columns and f"{c}_ci_high" in columns}
    hidden = {f"{c}_ci_{end}" for c in with_ci for end in ("low", "high")}
    shown = [i for i, c in enumerate(columns) if c not in hidden]
    header = [esc(f"{c} [95% CI]" if c in with_ci else str(c)) for c in (columns[i] for i in shown)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for cells in _rows(records, frame, digits=digits):
        by_col = dict(zip(columns, cells, strict=True))
        out = []
        for i in shown:
            col = columns[i]
            cell = cells[i]
            if col in with_ci and cell and by_col[f"{col}_ci_low"]:
                cell = f"{cell} [{by_col[f'{col}_ci_low']}, {by_col[f'{col}_ci_high']}]"
            out.append(esc(cell))
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """optim.lr -> lr, optim._target_ -> optim, model.hidden -> hidden (full key where names clash)."""
    def short(k: str) -> str:
        parts = k.split(".")
        return parts[-2] if parts[-1] == "_target_" and len(parts) > 1 else parts[-1]

    names = [short(k) for k in keys]
    return {k: (n if names.count(n) == 1 else k) for k, n in zip(keys, names, strict=True)}


def _short_value(value: str | None) -> str:
    if value is None:
        return "-"
    text = str(value)
    if re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+", text):  # torch.optim.SGD -> SGD
        text = text.rsplit(".", 1)[-1]
    try:
        number = float(text)
        if text.lower() not in ("nan", "inf", "-inf", "true", "false") and not text.isdigit():
            text = f"{number:.3g}"
    except ValueError:
        pass
    text = text.replace(", ", ",")
    return text if len(text) <= 18 else text[:17] + "…"


def _wrap(parts: Sequence[str], width: int, max_lines: int) -> list[str]:
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += "  " + part
        else:
            lines.append(part)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1] + "…"
    return lines


def key_params(records: Sequence[RunRecord], differing: Sequence[str]) -> list[str]:
    """The differing params worth a title: those with more than one value among the runs that
    have them (not optimiser-specific keys that differ only by being absent, e.g. optim.betas)."""
    return [k for k in differing if len({r.params[k] for r in records if k in r.params}) > 1]


def panel_title(rec: RunRecord, keys: Sequence[str]) -> str:
    """Run name; the key params (shortened) it has; ECE and AUROC."""
    short = _short_keys(keys)
    name = rec.name if len(rec.name) <= 44 else rec.name[:43] + "…"
    params = [f"{short[k]}={_short_value(rec.params[k])}" for k in keys if k in rec.params]
    lines = [name, *_wrap(params, 40, 2)]
    lines.append(f"ECE {fmt(rec.metrics.get('val/ece'), 3, missing='n/a')} · AUROC {fmt(rec.metrics.get('val/auroc'), 3, missing='n/a')}"
                 + (f" · {rec.outcome}" if rec.outcome and rec.outcome not in CONVERGED else ""))
    return "\n".join(lines)


# What compare prints on stdout: few columns, so that it fits a terminal; comparison.md and
# comparison.csv keep every column.
COMPACT_METRICS = (("val/log_loss", "val log loss"), ("val/ece", "val ECE"), ("val/auroc", "val AUROC"))
COMPACT_NAME = 40  # a longer run name is cut, with "…"


def compact_table(records: Sequence[RunRecord], differing: Sequence[str], width: int) -> tuple[str, list[str]]:
    """A markdown table at most `width` columns wide (unless a row's fixed cells alone are wider):
    run name, the key params that differ (shortened, as many as fit, in key order), outcome, and
    the validation log loss, ECE and AUROC to 4 decimals. Returns (table, the params it shows)."""
    keys = key_params(records, differing)
    short = _short_keys(keys)

    def metric(rec: RunRecord, key: str) -> str:
        return fmt(rec.metrics[key]) if key in rec.metrics else ""

    def name(rec: RunRecord) -> str:
        return rec.name if len(rec.name) <= COMPACT_NAME else rec.name[: COMPACT_NAME - 1] + "…"

    def render(params: Sequence[str]) -> str:
        rows = [["run name", *(short[k] for k in params), "outcome", *(label for _, label in COMPACT_METRICS)]]
        rows += [[name(r), *(_short_value(r.params.get(k)) for k in params), r.outcome or "-",
                  *(metric(r, key) for key, _ in COMPACT_METRICS)] for r in records]
        rows = [[c.replace("|", "\\|") for c in row] for row in rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        numeric = range(len(rows[0]) - len(COMPACT_METRICS), len(rows[0]))
        lines = ["| " + " | ".join(c.rjust(w) if i in numeric else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(row, widths, strict=True))) + " |" for row in rows]
        lines.insert(1, "|" + "|".join(("-" * (w + 1) + ":") if i in numeric else "-" * (w + 2)
                                       for i, w in enumerate(widths)) + "|")
        return "\n".join(lines)

    shown: list[str] = []
    for key in keys:
        if max(map(len, render([*shown, key]).splitlines())) <= width:
            shown.append(key)
    return render(shown), shown
