"""Which runs a comparison takes: explicit ids, a sweep's trials or a search filter."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from dropout_risk.errors import CompareError
from dropout_risk.tracking.names import TAG_TRIAL

_RUN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")


def open_store(tracking_uri: str):
    """The store to compare runs from; CompareError when a SQLite store does not exist."""
    from dropout_risk.tracking.store import client, missing_store

    if path := missing_store(tracking_uri):
        raise CompareError(
            f"no MLflow store at {path}: train some runs first, or pass tracking.uri=sqlite:///path/to/mlflow.db"
        )
    return client(tracking_uri)


def _experiments(client) -> dict[str, str]:
    """id -> name of every experiment (deleted ones too: their runs can still be asked for)."""
    from mlflow.entities import ViewType

    out: dict[str, str] = {}
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
        out.update({e.experiment_id: e.name for e in page})
        token = page.token
        if not token:
            return out


def _search(client, experiment_ids: list[str], filter_string: str, max_results: int,
            order_by: list[str] | None = None, shown: str | None = None) -> tuple[list, bool]:
    """Runs matching the filter (at most max_results) and whether more matched."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    runs: list = []
    token = None
    try:
        while len(runs) <= max_results:
            page = client.search_runs(experiment_ids, filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                                      max_results=min(1000, max_results + 1 - len(runs)), order_by=order_by,
                                      page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    except MlflowException as exc:
        first = str(exc.message if hasattr(exc, "message") else exc).strip().splitlines()[0]
        raise CompareError(f'MLflow rejected the filter "{shown or filter_string}": {first}') from None
    return runs[:max_results], len(runs) > max_results


def _check_ids(ids: Iterable[str], what: str) -> list[str]:
    out = []
    for run_id in ids:
        run_id = str(run_id).strip()
        if not _RUN_ID.match(run_id):
            raise CompareError(f"{what} {run_id!r} is not a run id (32 hex characters, as printed by train.py "
                               "after 'run_id:'); quote ids that Hydra would read as numbers, e.g. runs=['0123...']")
        out.append(run_id)
    return out


def _trial_key(run) -> tuple:
    trial = run.data.tags.get(TAG_TRIAL, "")
    return (0, int(trial), run.info.start_time) if trial.lstrip("-").isdigit() else (1, 0, run.info.start_time)


def select_runs(client, *, runs: Sequence[str] = (), sweep: str | None = None, filter: str | None = None,
                experiment: str | None = None, max_runs: int = 32,
                exclude_experiment: str | None = None) -> tuple[list, dict[str, str], list[str]]:
    """(MLflow runs in comparison order, experiment id -> name, notes). Raises CompareError."""
    from dropout_risk.tracking.query import runs_by_ids

    if max_runs < 1:
        raise CompareError(f"max_runs={max_runs} must be >= 1, e.g. max_runs=32")
    runs = list(runs or [])
    if runs and (sweep or filter or experiment):
        raise CompareError("runs=[...] lists the runs itself: drop sweep=, filter= and experiment=, "
                           "or drop runs= to select by sweep/filter")
    if not (runs or sweep or filter or experiment):
        raise CompareError('nothing selected: pass runs=[<id>,<id>], sweep=<sweep parent run id>, '
                           'filter="<MLflow search filter>" or experiment=<name>')
    experiments = _experiments(client)
    notes: list[str] = []

    if runs:
        ids = list(dict.fromkeys(_check_ids(runs, "runs entry")))  # de-duplicated, order kept
        if len(ids) > max_runs:
            raise CompareError(f"{len(ids)} run ids given but max_runs={max_runs}: pass max_runs={len(ids)} "
                               "to compare them all")
        found = runs_by_ids(client, list(experiments), ids)
        missing = [r for r in ids if r not in found]
        if missing:
            raise CompareError(f"run id{'s' if len(missing) > 1 else ''} not found in {client.tracking_uri}: "
                               f"{', '.join(missing)} (check the id, or pass tracking.uri=<the store it was logged to>)")
        for r in found.values():
            if r.info.lifecycle_stage == "deleted":
                notes.append(f"run {r.info.run_id} ({r.info.run_name}) is deleted; compared anyway")
        return [found[r] for r in ids], experiments, notes

    if experiment:
        if experiment in experiments:
            exp_ids = [experiment]
        else:
            exp_ids = [i for i, n in experiments.items() if n == experiment]
        if not exp_ids:
            known = ", ".join(sorted(n for n in experiments.values())) or "none"
            raise CompareError(f"experiment {experiment!r} not found in {client.tracking_uri}: known experiments: {known}")
    else:
        exp_ids = [i for i, n in experiments.items() if n != exclude_experiment]
    if not exp_ids:
        raise CompareError(f"the store {client.tracking_uri} has no experiments: train some runs first")

    clauses = []
    if sweep:
        [parent_id] = _check_ids([sweep], "sweep")
        parent = runs_by_ids(client, list(experiments), [parent_id]).get(parent_id)
        if parent is None:
            raise CompareError(f"sweep parent run {parent_id} not found in {client.tracking_uri}: pass the run id "
                               "of the sweep's parent run (its trials are nested under it)")
        clauses.append(f"tags.mlflow.parentRunId = '{parent_id}'")
    if filter:
        clauses.append(filter)  # MLflow filters are conjunctions (AND only, no parentheses)
    where = " and ".join(clauses)
    if sweep:
        # a sweep may be larger than max_runs; order its trials by number before cutting
        found, more = _search(client, exp_ids, where, 50_000, shown=filter)
        found.sort(key=_trial_key)
        if len(found) > max_runs:
            notes.append(f"the sweep has {len(found)} matching trials; comparing the first {max_runs} "
                         f"(pass max_runs={len(found)} to compare all)")
        found = found[:max_runs]
    else:
        found, more = _search(client, exp_ids, where, max_runs, shown=filter)
        if more:
            notes.append(f"more than {max_runs} runs matched; comparing the {max_runs} most recent "
                         "(raise max_runs or narrow the filter)")
    if not found:
        scope = f"experiment {experiment!r}" if experiment else "any experiment"
        what = (f"run {sweep} has no child runs" + (f' matching "{filter}"' if filter else "")
                + " (is it a sweep's parent run?)") if sweep else (
            f'no runs match "{filter}"' if filter else "no runs")
        raise CompareError(f"{what} in {scope} of {client.tracking_uri}: nothing to compare")
    return found, experiments, notes
