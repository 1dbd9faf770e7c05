"""Original vs re-run: the per-metric rows, the verdict and the tables that show them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from dropout_risk.format import fmt
from dropout_risk.tracking.names import TAG_WEIGHTS

NOT_COMPARED = ("time/", "population/")  # wall-clock times differ run to run; how many trained together


@dataclass
class Row:
    name: str
    original: Any
    rerun: Any
    difference: float | None
    verdict: str  # exact | within_tolerance | mismatch | differs | missing | not recorded


@dataclass
class Reproduction:
    original_run_id: str | None
    run_id: str
    verdict: str  # exact | within_tolerance | mismatch | no_original
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)
    label: str = ""  # what was reproduced, e.g. "run 3fa2... (sgd-lr0.3-h16x8-s0)"
    weights_identical: bool | None = None

    @property
    def ok(self) -> bool:
        return self.verdict in ("exact", "within_tolerance", "no_original")

    def worst(self) -> float:
        diffs = [abs(r.difference) for r in self.rows if r.difference is not None and math.isfinite(r.difference)]
        return max(diffs, default=0.0)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _metric_rank(key: str) -> tuple:
    split = key.split("/", 1)[0] if "/" in key else ""
    return ({"val": 0, "test": 1, "bayes": 2, "train": 3}.get(split, 4), key)


def compare_runs(original: dict[str, float], rerun: dict[str, float], original_tags: dict[str, str],
                 rerun_tags: dict[str, str], tolerance: float = 0.0) -> tuple[list[Row], str]:
    """Rows (every final metric, the outcome, the weight hash) and the overall verdict."""
    rows: list[Row] = []
    keys = sorted((set(original) | set(rerun)) - {k for k in set(original) | set(rerun) if k.startswith(NOT_COMPARED)},
                  key=_metric_rank)
    for key in keys:
        a, b = original.get(key), rerun.get(key)
        if a is None or b is None:
            rows.append(Row(key, a, b, None, "mismatch"))
            continue
        diff = b - a if math.isfinite(a) and math.isfinite(b) else (0.0 if _same(a, b) else math.nan)
        if _same(a, b):
            verdict = "exact"
        elif math.isfinite(diff) and abs(diff) <= tolerance * max(1.0, abs(a)):
            verdict = "within_tolerance"
        else:
            verdict = "mismatch"
        rows.append(Row(key, a, b, diff, verdict))
    for tag in ("outcome", "diverged_at_step"):
        a, b = original_tags.get(tag), rerun_tags.get(tag)
        if a is not None or b is not None:
            rows.append(Row(tag, a, b, None, "exact" if a == b else "mismatch"))
    a, b = original_tags.get(TAG_WEIGHTS), rerun_tags.get(TAG_WEIGHTS)
    if not a:
        rows.append(Row("weights_sha256", "not recorded", b, None, "not recorded"))
    else:
        rows.append(Row("weights_sha256", a, b, None, "exact" if a == b else ("mismatch" if tolerance == 0 else "differs")))
    verdicts = {r.verdict for r in rows}
    if "mismatch" in verdicts:
        overall = "mismatch"
    elif verdicts <= {"exact", "not recorded"}:
        overall = "exact"
    else:
        overall = "within_tolerance"
    return rows, overall


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return fmt(value, 10, general=True)
    text = str(value)
    return text[:12] + "…" if len(text) > 13 else text


def format_table(rows: list[Row]) -> str:
    header = ("metric", "original", "re-run", "difference", "verdict")
    cells = [header] + [(r.name, _cell(r.original), _cell(r.rerun),
                         "-" if r.difference is None else ("0" if r.difference == 0 else f"{r.difference:.3g}"),
                         r.verdict) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    return "\n".join(f"{c[0]:<{widths[0]}}  {c[1]:>{widths[1]}}  {c[2]:>{widths[2]}}  {c[3]:>{widths[3]}}  {c[4]}"
                     for c in cells)


def summary_line(rep: Reproduction) -> str:
    if rep.verdict == "no_original":
        return "verdict: no_original (no logged run has this config: nothing to compare against)"
    metrics = [r for r in rep.rows if r.name not in ("outcome", "diverged_at_step", "weights_sha256")]
    n_exact = sum(r.verdict == "exact" for r in metrics)
    bad = [r.name for r in rep.rows if r.verdict == "mismatch"]
    weights = {True: "weights identical", False: "weights differ", None: "weights not recorded by the original"}
    text = f"verdict: {rep.verdict} ({n_exact}/{len(metrics)} metrics bit-identical, {weights[rep.weights_identical]}"
    if rep.verdict == "within_tolerance":
        text += f", largest difference {rep.worst():.3g}"
    if bad:
        text += f"; mismatch in {', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}"
    return text + ")"


def _overall(reps: list[Reproduction]) -> str:
    return "exact" if all(r.verdict == "exact" for r in reps) else "within_tolerance"


def sweep_table(reps: list[Reproduction]) -> str:
    cells = [("trial", "original run", "re-run", "largest difference", "weights", "verdict")]
    for r in reps:
        weights = {True: "identical", False: "differ", None: "-"}[r.weights_identical]
        cells.append((r.label, str(r.original_run_id), r.run_id, f"{r.worst():.3g}", weights, r.verdict))
    widths = [max(len(c[i]) for c in cells) for i in range(6)]
    return "\n".join("  ".join(f"{v:<{w}}" for v, w in zip(c, widths, strict=True)).rstrip() for c in cells)
