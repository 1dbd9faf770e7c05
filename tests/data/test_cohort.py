"""The synthetic cohort: reproducible from its seed, labels drawn from p_true, the documented risk shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from dropout_risk.data.base import DataError, TabularData
from dropout_risk.data.cohort import FEATURES, GENERATOR_VERSION, generate_cohort, true_logit


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# a typical student: few absences, grades steady/rising, average feedback, 24 of 30 credits passed
TYPICAL = {
    "absence_rate": 0.08,
    "absence_trend": 0.0,
    "prev_grade_avg": 12.0,
    "grade_trend": 0.5,
    "advisor_feedback": 3.0,
    "credits_attempted": 30.0,
    "credits_passed": 24.0,
    "financial_aid": 0.0,
    "age_at_enrolment": 19.0,
    "part_time": 0.0,
}
HIGH_ABSENCE = {"absence_rate": 0.40}
DECLINING = {"grade_trend": -2.5}


def _rows(*changes: dict) -> pd.DataFrame:
    return pd.DataFrame([{**TYPICAL, **c} for c in changes], columns=list(FEATURES))


@pytest.fixture(scope="module")
def cohort() -> TabularData:
    return generate_cohort(20000, seed=0)


@pytest.fixture(scope="module")
def big_cohort() -> TabularData:
    return generate_cohort(50000, seed=1)


def test_shape_types_and_fingerprint(cohort: TabularData) -> None:
    assert cohort.name == "cohort"
    assert list(cohort.features.columns) == list(FEATURES)
    assert len(cohort.features) == len(cohort.y) == len(cohort.p_true) == 20000
    assert all(dtype == np.float64 for dtype in cohort.features.dtypes)
    assert np.isfinite(cohort.features.to_numpy()).all()
    assert cohort.y.dtype == np.int64 and set(np.unique(cohort.y)) == {0, 1}
    assert cohort.fingerprint == {"generator": GENERATOR_VERSION, "n_students": 20000, "seed": 0}


def test_feature_ranges_are_realistic(cohort: TabularData) -> None:
    f = cohort.features
    assert f.absence_rate.between(0, 1).all()
    assert f.absence_rate.median() < f.absence_rate.mean()  # right-skewed
    assert ((f.absence_rate - f.absence_trend).between(0, 1)).all()  # last term's rate is a rate too
    assert f.prev_grade_avg.between(0, 20).all()
    assert (f.grade_trend < 0).any() and (f.grade_trend > 0).any()
    assert f.advisor_feedback.between(1, 5).all()
    assert (f.credits_passed <= f.credits_attempted).all() and (f.credits_passed >= 0).all()
    assert (f.credits_attempted > 0).all()
    assert (
        f.age_at_enrolment.between(17, 45).all() and f.age_at_enrolment.median() < f.age_at_enrolment.mean()
    )
    for binary in ("financial_aid", "part_time"):
        assert set(f[binary].unique()) == {0.0, 1.0}


def test_features_are_correlated_like_students(cohort: TabularData) -> None:
    f = cohort.features
    pass_ratio = f.credits_passed / f.credits_attempted
    assert f.absence_rate.corr(f.prev_grade_avg) < -0.2
    assert f.absence_rate.corr(pass_ratio) < -0.3
    assert f.prev_grade_avg.corr(pass_ratio) > 0.2
    assert f.absence_trend.corr(f.grade_trend) < -0.2
    assert f.advisor_feedback.corr(f.prev_grade_avg) > 0.2
    assert f.age_at_enrolment.corr(f.part_time) > 0.1


def test_same_seed_same_cohort_different_seed_different() -> None:
    a, b, c = generate_cohort(2000, seed=7), generate_cohort(2000, seed=7), generate_cohort(2000, seed=8)
    pd.testing.assert_frame_equal(a.features, b.features)
    assert np.array_equal(a.features.to_numpy(), b.features.to_numpy())
    assert np.array_equal(a.y, b.y) and np.array_equal(a.p_true, b.p_true)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert not np.array_equal(a.features.to_numpy(), c.features.to_numpy())
    assert not np.array_equal(a.y, c.y) and not np.array_equal(a.p_true, c.p_true)


def test_seed_does_not_leak_global_rng_state() -> None:
    np.random.seed(123)
    a = generate_cohort(500, seed=3)
    np.random.seed(456)
    b = generate_cohort(500, seed=3)
    assert np.array_equal(a.y, b.y) and np.array_equal(a.p_true, b.p_true)


@pytest.mark.parametrize("n", [0, 10, 99, -5])
def test_too_few_students_is_a_data_error(n: int) -> None:
    with pytest.raises(DataError, match=rf"data.n_students={n} is too small: use at least 100"):
        generate_cohort(n)


def test_bad_arguments_are_data_errors() -> None:
    with pytest.raises(DataError, match="not an integer"):
        generate_cohort(1000.5)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="seed"):
        generate_cohort(1000, seed=-1)
    assert len(generate_cohort(100).y) == 100


def test_p_true_is_sigmoid_of_true_logit(cohort: TabularData) -> None:
    assert np.allclose(cohort.p_true, _sigmoid(true_logit(cohort.features)), rtol=0, atol=1e-12)
    assert ((cohort.p_true > 0) & (cohort.p_true < 1)).all()


def test_true_logit_needs_the_cohort_columns() -> None:
    with pytest.raises(DataError, match="absence_rate"):
        true_logit(pd.DataFrame({"grade_trend": [0.0]}))


def test_labels_follow_p_true_overall(big_cohort: TabularData) -> None:
    p, y = big_cohort.p_true, big_cohort.y
    se = np.sqrt(np.sum(p * (1 - p))) / len(p)
    assert abs(y.mean() - p.mean()) < 3 * se


def test_labels_follow_p_true_within_deciles(big_cohort: TabularData) -> None:
    p, y = big_cohort.p_true, big_cohort.y
    edges = np.quantile(p, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    deviations, chi2 = [], 0.0
    for b in range(10):
        m = bins == b
        expected = p[m].sum()
        variance = np.sum(p[m] * (1 - p[m]))
        deviations.append(abs(y[m].mean() - p[m].mean()))
        chi2 += (y[m].sum() - expected) ** 2 / variance
    assert max(deviations) < 0.03
    assert chi2 < 29.6  # chi-square, 10 dof, p = 0.001


def test_base_rate_and_bayes_discrimination_in_the_aimed_range(cohort: TabularData) -> None:
    p, y = cohort.p_true, cohort.y
    assert 0.20 <= y.mean() <= 0.30
    assert 0.85 <= roc_auc_score(y, p) <= 0.92
    bayes = log_loss(y, p)
    constant = log_loss(y, np.full_like(p, y.mean()))
    assert bayes < 0.85 * constant


def test_absence_and_decline_together_raise_risk_far_more_than_either_alone() -> None:
    rows = _rows({}, HIGH_ABSENCE, DECLINING, {**HIGH_ABSENCE, **DECLINING})
    logit = true_logit(rows)
    p = _sigmoid(logit)
    excess_absence, excess_decline, excess_both = p[1] - p[0], p[2] - p[0], p[3] - p[0]
    assert excess_absence > 0 and excess_decline > 0
    assert excess_both > 3 * (excess_absence + excess_decline)
    # not just the sigmoid's curvature: the interaction is in the logit itself
    interaction = logit[3] - logit[1] - logit[2] + logit[0]
    assert interaction > 2.0
    assert p[0] < 0.2 and p[3] > 0.8


def test_the_interaction_shows_in_the_generated_cohort(big_cohort: TabularData) -> None:
    # observed groups are confounded (high absence also means fewer credits passed), so the margin is
    # smaller than on the constructed rows above, but the joint excess still exceeds the two added up
    f, p = big_cohort.features, big_cohort.p_true
    high, falling = f.absence_rate > 0.25, f.grade_trend < -1.0
    neither = p[~high & ~falling].mean()
    both = p[high & falling].mean() - neither
    alone = (p[high & ~falling].mean() - neither) + (p[~high & falling].mean() - neither)
    assert both > 1.1 * alone


def test_advisor_feedback_moderates_the_high_risk_group(big_cohort: TabularData) -> None:
    # constructed rows: more feedback, less risk, and the interaction itself shrinks
    grid = np.linspace(1, 5, 9)
    risky = _rows(*({**HIGH_ABSENCE, **DECLINING, "advisor_feedback": fb} for fb in grid))
    calm = _rows(*({"advisor_feedback": fb} for fb in grid))
    logit_risky, logit_calm = true_logit(risky), true_logit(calm)
    assert (np.diff(logit_risky) < 0).all()
    assert (np.diff(logit_calm) < 0).all()
    gap = logit_risky - logit_calm  # what high absence + decline add, at each feedback level
    assert gap[0] > 2 * gap[-1]
    assert _sigmoid(logit_risky[-1]) < 0.5 < _sigmoid(logit_risky[0])

    # the generated high-risk students: one point more feedback lowers their true risk
    f = big_cohort.features
    group = f[(f.absence_rate > 0.25) & (f.grade_trend < -1.0)]
    assert len(group) > 500
    better = group.assign(advisor_feedback=np.clip(group.advisor_feedback + 1.0, 1, 5))
    p_now, p_better = _sigmoid(true_logit(group)), _sigmoid(true_logit(better))
    assert p_better.mean() < p_now.mean() - 0.1
    assert (p_better <= p_now).all()
