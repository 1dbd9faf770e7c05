"""compare_runs, the verdict of a reproduction, on hand-made metrics and tags: the weight hash
counts, a tolerance admits exactly what it says (tolerance x max(1, |original|)), and every
row says what it compared."""

from __future__ import annotations

import math

import pytest

from dropout_risk.reproduce.verdict import Reproduction, compare_runs, summary_line

METRICS = {"val/auroc": 0.8125, "val/loss": 0.4375, "test/auroc": 0.75, "train/loss": 2.5, "time/fit_s": 1.0}
TAGS = {"outcome": "converged", "weights_sha256": "a" * 64}


def _rows(rows) -> dict:
    return {r.name: r for r in rows}


def test_identical_runs_are_exact():
    rows, verdict = compare_runs(METRICS, dict(METRICS, **{"time/fit_s": 9.0}), TAGS, dict(TAGS))
    assert verdict == "exact"
    by_name = _rows(rows)
    assert "time/fit_s" not in by_name  # wall-clock is not compared
    assert {r.verdict for r in rows} == {"exact"}
    assert set(by_name) == {"val/auroc", "val/loss", "test/auroc", "train/loss", "outcome", "weights_sha256"}
    assert [r.name for r in rows][:4] == ["val/auroc", "val/loss", "test/auroc", "train/loss"]  # val, test, train


@pytest.mark.parametrize("tolerance", [0.0, 1e-3])
def test_only_the_weights_differ_is_not_exact(tolerance):
    """Every metric and the outcome bit-identical, the final weights not: at tolerance 0 that is a
    mismatch, with a tolerance the weights row says they differ and the verdict cannot be exact."""
    rerun_tags = dict(TAGS, weights_sha256="b" * 64)
    rows, verdict = compare_runs(METRICS, dict(METRICS), TAGS, rerun_tags, tolerance)
    weights = _rows(rows)["weights_sha256"]
    assert (weights.original, weights.rerun) == ("a" * 64, "b" * 64)
    if tolerance == 0:
        assert verdict == "mismatch" and weights.verdict == "mismatch"
        rep = Reproduction("orig", "new", verdict, rows, weights_identical=False)
        assert summary_line(rep) == ("verdict: mismatch (4/4 metrics bit-identical, weights differ; "
                                     "mismatch in weights_sha256)")
    else:
        assert verdict == "within_tolerance" and weights.verdict == "differs"
    assert all(r.verdict == "exact" for r in rows if r.name != "weights_sha256")


def test_weights_not_recorded_by_the_original():
    tags = {"outcome": "converged"}
    rows, verdict = compare_runs(METRICS, dict(METRICS), tags, dict(TAGS))
    assert verdict == "exact"
    assert _rows(rows)["weights_sha256"].verdict == "not recorded"


@pytest.mark.parametrize("original", [0.25, 2.5, -40.0])  # |original| < 1: the tolerance is absolute
@pytest.mark.parametrize("tolerance", [1e-6, 1e-3])
def test_tolerance_is_relative_to_max_one_and_the_original(original, tolerance):
    scale = tolerance * max(1.0, abs(original))
    cases = {"exact": original, "within_tolerance": original + 0.9 * scale, "mismatch": original + 1.1 * scale}
    for expected, rerun in cases.items():
        rows, verdict = compare_runs({"val/loss": original}, {"val/loss": rerun}, TAGS, dict(TAGS), tolerance)
        row = _rows(rows)["val/loss"]
        assert row.verdict == expected, (original, rerun, tolerance)
        assert verdict == expected
        assert row.difference == rerun - original
    # below the original too: the difference is signed, the check is on its size
    for expected, rerun in {"within_tolerance": original - 0.9 * scale, "mismatch": original - 1.1 * scale}.items():
        rows, verdict = compare_runs({"val/loss": original}, {"val/loss": rerun}, TAGS, dict(TAGS), tolerance)
        assert verdict == expected and _rows(rows)["val/loss"].difference < 0, (original, rerun, tolerance)


def test_tolerance_zero_is_bit_identity():
    rows, verdict = compare_runs({"val/loss": 0.5}, {"val/loss": math.nextafter(0.5, 1.0)}, TAGS, dict(TAGS), 0.0)
    assert verdict == "mismatch" and _rows(rows)["val/loss"].verdict == "mismatch"


def test_one_bad_metric_among_good_ones_is_a_mismatch():
    rerun = dict(METRICS, **{"val/auroc": METRICS["val/auroc"] + 1e-4, "val/loss": METRICS["val/loss"] + 0.5})
    rows, verdict = compare_runs(METRICS, rerun, TAGS, dict(TAGS), tolerance=1e-3)
    by_name = _rows(rows)
    assert verdict == "mismatch"
    assert by_name["val/auroc"].verdict == "within_tolerance" and by_name["val/loss"].verdict == "mismatch"
    assert by_name["weights_sha256"].verdict == "exact"


def test_nan_missing_metrics_and_outcome():
    nan = float("nan")
    rows, verdict = compare_runs({"val/loss": nan}, {"val/loss": nan}, TAGS, dict(TAGS))
    assert verdict == "exact" and _rows(rows)["val/loss"].difference == 0.0  # NaN both times: the same
    rows, verdict = compare_runs({"val/loss": nan}, {"val/loss": 0.5}, TAGS, dict(TAGS), tolerance=1.0)
    assert verdict == "mismatch"
    rows, verdict = compare_runs({"val/loss": 0.5, "val/auroc": 0.7}, {"val/loss": 0.5}, TAGS, dict(TAGS))
    assert verdict == "mismatch" and _rows(rows)["val/auroc"].rerun is None
    diverged = dict(TAGS, outcome="diverged", diverged_at_step="12")
    rows, verdict = compare_runs({"val/loss": 0.5}, {"val/loss": 0.5}, diverged, dict(diverged, diverged_at_step="13"))
    assert verdict == "mismatch" and _rows(rows)["diverged_at_step"].verdict == "mismatch"
    assert _rows(rows)["outcome"].verdict == "exact"
    rows, verdict = compare_runs({"val/loss": 0.5}, {"val/loss": 0.5}, TAGS, dict(TAGS, outcome="diverged"), 1.0)
    assert verdict == "mismatch" and _rows(rows)["outcome"].verdict == "mismatch"
