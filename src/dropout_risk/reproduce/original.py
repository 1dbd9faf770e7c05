"""Finding the original run: the store, the run, its config, a sweep's trials."""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig

from dropout_risk.config.saved import load_config_text, to_container
from dropout_risk.errors import ReproduceError
from dropout_risk.tracking.names import CONFIG_ARTIFACT, TAG_BEST_RUN_ID, TAG_SWEEP_ID, TAG_TRIAL


def open_store(uri: str, must_exist: bool = True):
    from dropout_risk.tracking.store import check_tracking, client, missing_store

    check_tracking(uri)
    if must_exist and missing_store(uri):
        raise ReproduceError(f"tracking.uri={uri}: no MLflow store there; pass tracking.uri=<the store the run was "
                             "logged to>, e.g. tracking.uri=sqlite:///mlruns/mlflow.db")
    return client(uri)


def get_run(client, run_id: str, uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
            raise ReproduceError(f"run_id={run_id} is not in {uri}: check the id (the `run_id:` line a run "
                                 "printed) or pass tracking.uri=<the store it was logged to>") from None
        raise


def run_config(client, run) -> DictConfig:
    """The run's config artifact, through the schema and the allow-list."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
            text = Path(path).read_text(encoding="utf-8")
        except Exception:  # noqa: BLE001 - absent artifact: MlflowException or OSError by store
            raise ReproduceError(f"run {run_id} ({run.info.run_name}) has no {CONFIG_ARTIFACT} artifact: it was not "
                                 "logged by dropout-risk's train(), so there is no config to re-run") from None
    return load_config_text(text, f"the {CONFIG_ARTIFACT} of run {run_id}")


def _is_sweep_parent(client, run) -> bool:
    tags = run.data.tags
    return "sweep_kind" in tags or TAG_BEST_RUN_ID in tags or (
        tags.get(TAG_SWEEP_ID) == run.info.run_id and TAG_TRIAL not in tags)


def sweep_trials(client, parent) -> list:
    runs = client.search_runs([parent.info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=5000)
    return sorted(runs, key=lambda r: int(r.data.tags.get(TAG_TRIAL, "1000000")))


def _identity(params: dict[str, str], ignore_path: bool) -> dict[str, str]:
    """What must agree for two runs to have run the same config (tracking and tags do not count)."""
    return {k: v for k, v in params.items()
            if not k.startswith(("tracking.", "tags.")) and not (ignore_path and k == "data.path")}


def find_original(client, cfg: DictConfig, ignore_path: bool = False):
    """The logged run whose params are this config (the oldest, preferring non-reproductions)."""
    from dropout_risk.tracking.run import flatten

    exp = client.get_experiment_by_name(str(cfg.tracking.experiment))
    if exp is None:
        return None
    want = _identity(flatten(to_container(cfg)), ignore_path)
    runs = client.search_runs([exp.experiment_id], f"params.seed = '{cfg.seed}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"], max_results=5000)
    matches = [r for r in runs if "sweep_kind" not in r.data.tags and _identity(r.data.params, ignore_path) == want]
    matches.sort(key=lambda r: "reproduced_from" in r.data.tags)
    return matches[0] if matches else None
