"""The verdict of a reproduction: the cases mutation testing showed unguarded (docs/testing.md):
every field of every row, the row order, the boundary of a tolerance, and the exact text of the
summary line and of the two tables a user reads."""

from __future__ import annotations

import math

import pytest

from dropout_risk.reproduce.verdict import (
    Reproduction,
    Row,
    _overall,
    compare_runs,
    format_table,
    summary_line,
    sweep_table,
)

TAGS = {"outcome": "converged", "weights_sha256": "a" * 64}


def _by_name(rows: list[Row]) -> dict[str, Row]:
    return {r.name: r for r in rows}


def test_every_row_keeps_both_values() -> None:
    original = {"val/loss": 0.5, "val/auroc": 0.75, "test/auroc": 0.7, "time/fit_s": 3.0}
    rerun = {"val/loss": 0.5, "test/auroc": 0.7, "test/brier": 0.125}
    rows, verdict = compare_runs(original, rerun, {"weights_sha256": ""}, {"outcome": "converged", "weights_sha256": "b" * 64})
    assert verdict == "mismatch"
    assert rows == [
        Row("val/auroc", 0.75, None, None, "mismatch"),
        Row("val/loss", 0.5, 0.5, 0.0, "exact"),
        Row("test/auroc", 0.7, 0.7, 0.0, "exact"),
        Row("test/brier", None, 0.125, None, "mismatch"),  # a missing metric does not end the loop
        Row("outcome", None, "converged", None, "mismatch"),  # a tag on one side only is a row
        Row("weights_sha256", "not recorded", "b" * 64, None, "not recorded"),
    ]


def test_a_wall_clock_metric_on_one_side_only_is_not_compared() -> None:
    rows, verdict = compare_runs({"val/loss": 0.5, "time/fit_s": 2.0}, {"val/loss": 0.5}, TAGS, dict(TAGS))
    assert verdict == "exact" and "time/fit_s" not in _by_name(rows)


def test_the_default_tolerance_is_zero() -> None:
    assert compare_runs({"val/loss": 0.5}, {"val/loss": 0.75}, TAGS, dict(TAGS))[1] == "mismatch"


def test_a_difference_of_exactly_the_tolerance_is_within_it() -> None:
    rows, verdict = compare_runs({"val/loss": 0.5}, {"val/loss": 0.75}, TAGS, dict(TAGS), tolerance=0.25)
    assert verdict == "within_tolerance" and _by_name(rows)["val/loss"].difference == 0.25


def test_an_infinite_original_has_no_numeric_difference() -> None:
    rows, verdict = compare_runs({"val/loss": math.inf}, {"val/loss": 0.5}, TAGS, dict(TAGS), tolerance=1.0)
    row = _by_name(rows)["val/loss"]
    assert verdict == "mismatch" and row.verdict == "mismatch" and math.isnan(row.difference)


def test_rows_come_in_split_order_val_test_bayes_train_then_the_rest() -> None:
    keys = ["boundary/lr", "train/loss", "bayes/auroc", "test/log_loss", "n_trials", "val/ece", "test/auroc",
            "mechanism/act/l0"]
    metrics = dict.fromkeys(keys, 1.0)
    rows, _ = compare_runs(metrics, dict(metrics), TAGS, dict(TAGS))
    assert [r.name for r in rows] == ["val/ece", "test/auroc", "test/log_loss", "bayes/auroc", "train/loss",
                                      "boundary/lr", "mechanism/act/l0", "n_trials", "outcome", "weights_sha256"]


def test_only_the_first_path_segment_names_the_split() -> None:
    # "val" alone has no split; "val/calib/ece" is a val metric, not one of a split "val/calib"
    metrics = dict.fromkeys(["val", "train/loss", "val/calib/ece", "test"], 1.0)
    rows, _ = compare_runs(metrics, dict(metrics), TAGS, dict(TAGS))
    assert [r.name for r in rows][:4] == ["val/calib/ece", "train/loss", "test", "val"]


def test_a_tag_row_shows_the_original_and_the_rerun_value() -> None:
    rows, verdict = compare_runs({}, {}, {"outcome": "converged", "diverged_at_step": "4", "weights_sha256": "a"},
                                 {"outcome": "diverged", "weights_sha256": "a"})
    assert verdict == "mismatch"
    assert rows == [Row("outcome", "converged", "diverged", None, "mismatch"),
                    Row("diverged_at_step", "4", None, None, "mismatch"),
                    Row("weights_sha256", "a", "a", None, "exact")]


def _rep(verdict: str, rows: list[Row], weights: bool | None = True) -> Reproduction:
    return Reproduction("orig", "new", verdict, rows, weights_identical=weights)


def test_summary_line_of_no_original() -> None:
    assert summary_line(_rep("no_original", [])) == (
        "verdict: no_original (no logged run has this config: nothing to compare against)")


def test_summary_line_counts_metrics_only_and_names_the_weights() -> None:
    rows = [Row("val/loss", 0.5, 0.5, 0.0, "exact"), Row("val/auroc", 0.7, 0.7002, 2e-4, "within_tolerance"),
            Row("outcome", "diverged", "diverged", None, "exact"), Row("diverged_at_step", "3", "3", None, "exact"),
            Row("weights_sha256", "a", "a", None, "exact")]
    assert summary_line(_rep("within_tolerance", rows, True)) == (
        "verdict: within_tolerance (1/2 metrics bit-identical, weights identical, largest difference 0.0002)")
    assert summary_line(_rep("exact", rows[:1] + rows[2:], None)) == (
        "verdict: exact (1/1 metrics bit-identical, weights not recorded by the original)")


@pytest.mark.parametrize(("n_bad", "listed"), [(6, "m0, m1, m2, m3, m4, m5"), (7, "m0, m1, m2, m3, m4, m5 ...")])
def test_summary_line_lists_six_mismatches_then_dots(n_bad: int, listed: str) -> None:
    rows = [Row(f"m{i}", 0.0, 1.0, 1.0, "mismatch") for i in range(n_bad)]
    assert summary_line(_rep("mismatch", rows, False)) == (
        f"verdict: mismatch (0/{n_bad} metrics bit-identical, weights differ; mismatch in {listed})")


def test_format_table_exact_text() -> None:
    rows = [Row("val/loss", 0.4375, 0.4375, 0.0, "exact"),
            Row("val/auroc", 1 / 3, 0.3334, 0.3334 - 1 / 3, "within_tolerance"),
            Row("test/auroc", 0.75, None, None, "mismatch"),
            Row("outcome", "converged", "converged", None, "exact"),
            Row("weights_sha256", "a" * 64, "abcdefghijklm", None, "differs"),  # 13 characters: kept whole
            Row("x", "abcdefghijklmn", 12345.678901234, None, "mismatch")]  # 14: cut to 12 and an ellipsis
    assert format_table(rows) == "\n".join([
        "metric               original         re-run  difference  verdict",
        "val/loss               0.4375         0.4375           0  exact",
        "val/auroc        0.3333333333         0.3334    6.67e-05  within_tolerance",
        "test/auroc               0.75              -           -  mismatch",
        "outcome             converged      converged           -  exact",
        "weights_sha256  aaaaaaaaaaaa…  abcdefghijklm           -  differs",
        "x               abcdefghijkl…     12345.6789           -  mismatch",
    ])


def test_format_table_sizes_each_column_to_its_own_values() -> None:
    """A wide original next to a narrow re-run; a difference of -0.0 (0.0 re-run as -0.0, an
    exact match) prints as 0, a difference of 1 as 1."""
    rows = [Row("val/loss", 0.123456789, 2.0, 2.0 - 0.123456789, "mismatch"),
            Row("val/brier", 0.0, -0.0, -0.0, "exact"),
            Row("val/n", 1.0, 2.0, 1.0, "mismatch")]
    assert format_table(rows) == "\n".join([
        "metric        original  re-run  difference  verdict",
        "val/loss   0.123456789       2        1.88  mismatch",
        "val/brier            0      -0           0  exact",
        "val/n                1       2           1  mismatch",
    ])


def test_sweep_table_exact_text_and_worst_difference() -> None:
    good = Reproduction("orig1", "new1", "exact", [Row("val/loss", 0.5, 0.5, 0.0, "exact")],
                        label="trial 0 (sgd-lr0.1)", weights_identical=True)
    near = Reproduction(None, "new2", "within_tolerance",
                        [Row("val/a", 0.5, 0.501, 1e-3, "within_tolerance"), Row("val/b", 0.5, 0.497, -3e-3, "within_tolerance"),
                         Row("val/c", math.nan, 0.5, math.nan, "mismatch"), Row("outcome", "x", "x", None, "exact")],
                        label="trial 1 (sgd-lr0.3)", weights_identical=None)
    bad = Reproduction("orig3", "new3", "mismatch", [], label="trial 2", weights_identical=False)
    assert near.worst() == 3e-3 and good.worst() == 0.0 and bad.worst() == 0.0
    assert isinstance(bad.worst(), float)
    assert sweep_table([good, near, bad]) == "\n".join([
        "trial                original run  re-run  largest difference  weights    verdict",
        "trial 0 (sgd-lr0.1)  orig1         new1    0                   identical  exact",
        "trial 1 (sgd-lr0.3)  None          new2    0.003               -          within_tolerance",
        "trial 2              orig3         new3    0                   differ     mismatch",
    ])


def test_overall_of_a_sweep() -> None:
    exact = Reproduction("o", "n", "exact", [])
    near = Reproduction("o", "n", "within_tolerance", [])
    assert _overall([exact, exact]) == "exact"
    assert _overall([exact, near]) == "within_tolerance"
    assert _overall([]) == "exact"
