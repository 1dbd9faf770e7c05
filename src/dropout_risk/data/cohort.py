"""Synthetic student cohort with a known true dropout probability (the embedded default data).

Every number here is drawn from ``np.random.default_rng(seed)`` in a fixed order, so a cohort is
fully determined by ``(GENERATOR_VERSION, n_students, seed)``. Change anything that alters the
draws or the true risk function and bump ``GENERATOR_VERSION``: it is part of the fingerprint
that runs log, and old results are only reproducible under the old version.

Features (one row per student, all float64)
-------------------------------------------
==================  ==================================================================  ===========
column              meaning                                                             range
==================  ==================================================================  ===========
absence_rate        share of sessions missed this term (right-skewed, median ~0.12)     0 .. 1
absence_trend       change in absence rate since last term (+ = missing more)           ~ -0.3 .. 0.3
prev_grade_avg      previous grade average on the Portuguese 0-20 scale (10 = pass)     0 .. 20
grade_trend         change in grade average per term, points on 0-20 (- = declining)    ~ -6 .. 6
advisor_feedback    advisor's engagement score, 1 (worried) .. 5 (very positive)       1 .. 5
credits_attempted   ECTS credits attempted this year (full time ~30, part time ~18)     6 .. 36
credits_passed      ECTS credits passed, <= credits_attempted, tracks grades/absence    0 .. attempted
financial_aid       receives a grant / scholarship (0/1)                                0, 1
age_at_enrolment    age in years when first enrolled (right-skewed)                     17 .. 45
part_time           studies part time (0/1), more likely for older students             0, 1
==================  ==================================================================  ===========

Correlations come from two latent factors: *engagement* (higher grades, fewer absences, better
feedback, more credits passed) and a *shock* this term (absences rising, grades falling, feedback
dropping). Older students study part time more often; part-timers miss more sessions.

The true risk
-------------
``p_true = sigmoid(f(x))`` with (see :func:`true_logit`, the single source of truth)::

    A = sigmoid(20 * (absence_rate - 0.25))           # "high absence", soft step at 25 %
    D = sigmoid(-2.5 * (grade_trend + 1.0))           # "grades declining", soft step at -1 point/term
    G = sigmoid(2.5 * (advisor_feedback - 3.5))       # "good advisor feedback", soft step at 3.5
    pass_ratio = credits_passed / credits_attempted

    f(x) = -2.1
           + 0.7 * A + 0.6 * D                        # each alone: modest
           + 4.2 * A * D * (1 - 0.75 * G)             # together: large, shrunk by good feedback
           - 0.45 * (advisor_feedback - 3)            # feedback also lowers risk directly
           - 0.16 * (prev_grade_avg - 12)
           - 3.0 * (pass_ratio - 0.8)
           + 4.0 * absence_trend
           - 0.45 * financial_aid + 0.35 * part_time
           + 0.03 * (age_at_enrolment - 20)

For a typical student (absence 8 %, grades +0.5/term, feedback 3, 24 of 30 credits passed) p_true is
0.11; absence 40 % alone gives 0.20, grades falling 2.5 points/term alone 0.20, both together 0.92.
With feedback 4.5 the "both" student drops to 0.41; with feedback 2 it rises to 0.97.

Labels are ``y ~ Bernoulli(p_true)``, so even the Bayes-optimal classifier is imperfect. At
``n_students=20000, seed=0`` the dropout rate is 25.7 % (mean p_true 25.3 %), the Bayes AUROC
(p_true as the score) 0.873 and the Bayes log loss 0.360; the tests pin these ranges.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dropout_risk.data.base import DataError, TabularData

GENERATOR_VERSION = "cohort-v1"
MIN_STUDENTS = 100

FEATURES: tuple[str, ...] = (
    "absence_rate",
    "absence_trend",
    "prev_grade_avg",
    "grade_trend",
    "advisor_feedback",
    "credits_attempted",
    "credits_passed",
    "financial_aid",
    "age_at_enrolment",
    "part_time",
)

# Coefficients of the true logit (documented in the module docstring; keep the two in sync).
INTERCEPT = -2.1
ABSENCE_THRESHOLD, ABSENCE_SHARPNESS = 0.25, 20.0
DECLINE_THRESHOLD, DECLINE_SHARPNESS = -1.0, 2.5
FEEDBACK_THRESHOLD, FEEDBACK_SHARPNESS = 3.5, 2.5
W_ABSENCE, W_DECLINE, W_INTERACTION, FEEDBACK_SHRINK = 0.7, 0.6, 4.2, 0.75


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # numerically stable for large |z|


def true_logit(features: pd.DataFrame) -> np.ndarray:
    """The true log-odds f(x) of dropout for any rows holding the cohort's feature columns."""
    missing = [c for c in FEATURES if c not in features.columns]
    if missing:
        raise DataError(
            f"true_logit needs the cohort columns, missing {missing}: pass rows with all of {list(FEATURES)}"
        )
    x = {c: features[c].to_numpy(dtype=np.float64) for c in FEATURES}
    high_absence = _sigmoid(ABSENCE_SHARPNESS * (x["absence_rate"] - ABSENCE_THRESHOLD))
    declining = _sigmoid(-DECLINE_SHARPNESS * (x["grade_trend"] - DECLINE_THRESHOLD))
    good_feedback = _sigmoid(FEEDBACK_SHARPNESS * (x["advisor_feedback"] - FEEDBACK_THRESHOLD))
    pass_ratio = x["credits_passed"] / np.maximum(x["credits_attempted"], 1.0)
    return (
        INTERCEPT
        + W_ABSENCE * high_absence
        + W_DECLINE * declining
        + W_INTERACTION * high_absence * declining * (1.0 - FEEDBACK_SHRINK * good_feedback)
        - 0.45 * (x["advisor_feedback"] - 3.0)
        - 0.16 * (x["prev_grade_avg"] - 12.0)
        - 3.0 * (pass_ratio - 0.8)
        + 4.0 * x["absence_trend"]
        - 0.45 * x["financial_aid"]
        + 0.35 * x["part_time"]
        + 0.03 * (x["age_at_enrolment"] - 20.0)
    )


def true_probability(features: pd.DataFrame) -> np.ndarray:
    """p_true = sigmoid(true_logit(features))."""
    return _sigmoid(true_logit(features))


def _features(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Draw the feature table. The order of the draws is part of GENERATOR_VERSION."""
    engagement = rng.standard_normal(n)  # latent: good student
    shock = rng.standard_normal(n)  # latent: something went wrong this term

    age = np.clip(np.floor(17.0 + rng.gamma(shape=1.3, scale=2.6, size=n)), 17, 45)
    part_time = (rng.random(n) < _sigmoid(-2.2 + 0.22 * (age - 19.0))).astype(np.float64)
    financial_aid = (rng.random(n) < _sigmoid(-0.6 + 0.3 * engagement)).astype(np.float64)

    prev_grade = np.clip(12.0 + 2.4 * (0.65 * engagement + 0.76 * rng.standard_normal(n)), 0.0, 20.0)
    grade_trend = np.clip(1.4 * (-0.65 * shock + 0.2 * engagement + 0.73 * rng.standard_normal(n)), -6.0, 6.0)
    absence_logit = -2.1 - 0.55 * engagement + 0.45 * part_time + 0.45 * shock + 0.6 * rng.standard_normal(n)
    absence_rate = _sigmoid(absence_logit)
    absence_trend = np.clip(0.07 * (0.6 * shock + 0.8 * rng.standard_normal(n)), -0.3, 0.3)
    # the trend cannot have pushed this term's rate outside [0, 1] from last term's
    absence_trend = np.clip(absence_trend, absence_rate - 1.0, absence_rate)
    feedback = np.clip(
        3.2 + 0.75 * (0.55 * engagement - 0.35 * shock + 0.76 * rng.standard_normal(n)), 1.0, 5.0
    )
    feedback = np.round(feedback, 1)

    full_load = rng.integers(24, 37, size=n)
    part_load = rng.integers(6, 25, size=n)
    attempted = np.where(part_time == 1.0, part_load, full_load).astype(np.int64)
    pass_prob = _sigmoid(1.6 + 0.45 * (prev_grade - 12.0) / 2.4 + 0.35 * grade_trend - 3.5 * absence_rate)
    passed = rng.binomial(attempted, pass_prob)

    return pd.DataFrame(
        {
            "absence_rate": absence_rate,
            "absence_trend": absence_trend,
            "prev_grade_avg": np.round(prev_grade, 2),
            "grade_trend": np.round(grade_trend, 2),
            "advisor_feedback": feedback,
            "credits_attempted": attempted.astype(np.float64),
            "credits_passed": passed.astype(np.float64),
            "financial_aid": financial_aid,
            "age_at_enrolment": age,
            "part_time": part_time,
        },
        columns=list(FEATURES),
    )


def generate_cohort(n_students: int = 20000, seed: int = 0) -> TabularData:
    """A synthetic cohort of ``n_students`` with labels drawn from the known ``p_true``."""
    if isinstance(n_students, bool) or not isinstance(n_students, int | np.integer):
        raise DataError(f"data.n_students={n_students!r} is not an integer: pass e.g. data.n_students=20000")
    if n_students < MIN_STUDENTS:
        raise DataError(f"data.n_students={n_students} is too small: use at least {MIN_STUDENTS} students")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed={seed!r} is not a non-negative integer: pass e.g. seed=0")
    n, seed = int(n_students), int(seed)
    rng = np.random.default_rng(seed)
    features = _features(n, rng)
    p_true = true_probability(features)
    y = (rng.random(n) < p_true).astype(np.int64)
    return TabularData(
        name="cohort",
        features=features,
        y=y,
        p_true=p_true,
        fingerprint={"generator": GENERATOR_VERSION, "n_students": n, "seed": seed},
    )
