"""Retrying a trial whose worker died: the same learning rate, enqueued again, so the planned count is reached."""

from __future__ import annotations

import optuna


def retry_failed_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Heartbeat expired (worker died): re-enqueue the same trial so the planned count is reached."""
    enqueue_retry(study, trial)


def enqueue_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    # A scan trial is retried at its grid learning rate; a refine trial is sampled afresh.
    scan = trial.user_attrs.get("phase") == "scan"
    params = {"lr": trial.params.get("lr", trial.user_attrs.get("lr_planned"))} if scan else {}
    study.enqueue_trial(params, user_attrs={"phase": trial.user_attrs.get("phase", "scan"),
                                            "lr_planned": trial.user_attrs.get("lr_planned"),
                                            "retry_of": trial.number})
