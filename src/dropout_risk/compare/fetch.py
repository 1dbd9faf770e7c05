"""What is fetched per run, in bulk: params, tags, final metrics, loss curves, predictions."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from dropout_risk.tracking.names import LOSS_CURVES, PREDICTIONS_ARTIFACT, TAG_OUTCOME


@dataclass
class RunRecord:
    """One run as the comparison sees it."""

    run_id: str
    name: str
    experiment_id: str
    experiment: str
    status: str
    artifact_uri: str
    params: dict[str, str]
    metrics: dict[str, float]  # final values, as MLflow reports them
    tags: dict[str, str]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # key -> (steps, values)
    val_y: np.ndarray | None = None
    val_p: np.ndarray | None = None  # sigmoid(val_logit); NaN where the logit is not finite

    @property
    def outcome(self) -> str:
        return self.tags.get(TAG_OUTCOME, "")

    @property
    def has_reliability(self) -> bool:
        return self.val_y is not None and self.val_p is not None


Point = tuple[int, int, float]  # (step, timestamp, value)


def _histories_sql(store, run_ids: list[str], key: str) -> dict[str, list[Point]]:
    """One metric of all runs in one SQL query of (run, step, timestamp, value) columns: what
    SqlAlchemyStore.get_metric_history_bulk returns, without building an entity per point
    (~20x faster on long histories). NaN is stored as is_nan (value 0), as MLflow reads it."""
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    out: dict[str, list[Point]] = {r: [] for r in run_ids}
    with store.ManagedSessionMaker() as session:
        for i in range(0, len(run_ids), 500):
            rows = (session.query(SqlMetric.run_uuid, SqlMetric.step, SqlMetric.timestamp, SqlMetric.value,
                                  SqlMetric.is_nan)
                    .filter(SqlMetric.key == key, SqlMetric.run_uuid.in_(run_ids[i : i + 500])).all())
            for run_id, step, ts, value, is_nan in rows:
                out[run_id].append((int(step), int(ts), math.nan if is_nan else float(value)))
    return out


def _histories(client, run_ids: list[str], key: str, workers: int) -> dict[str, list[Point]]:
    """run id -> [(step, timestamp, value)] of one metric: for SQL stores in one query for all
    runs, else (a tracking server) one get_metric_history request per run, in parallel."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if isinstance(store, SqlAlchemyStore) and type(store)._filter_entity_ids is SqlAlchemyStore._filter_entity_ids:
        try:
            return _histories_sql(store, run_ids, key)
        except Exception:  # noqa: BLE001 - a schema this code does not know: the public API below
            pass

    def one(run_id: str) -> list[Point]:
        return [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(run_ids, pool.map(one, run_ids), strict=True))


def _as_curve(history: list[Point]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) by step; of values logged twice at one step the last one counts."""
    by_step: dict[int, float] = {}
    for step, _, value in sorted(history, key=lambda p: (p[0], p[1])):
        by_step[step] = value
    steps = np.fromiter(by_step.keys(), dtype=np.int64, count=len(by_step))
    return steps, np.fromiter(by_step.values(), dtype=np.float64, count=len(by_step))


def _load_predictions(artifact_uri: str, tracking_uri: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(val_y, sigmoid(val_logit)) from predictions/predictions.npz, or None if the run has none."""
    import io

    from dropout_risk.tracking.query import artifact_bytes

    try:
        raw = artifact_bytes(artifact_uri, PREDICTIONS_ARTIFACT, tracking_uri)
        if raw is None:
            return None
        with np.load(io.BytesIO(raw)) as data:
            y = np.asarray(data["val_y"]).astype(np.int64)
            logit = np.asarray(data["val_logit"], dtype=np.float64)
    except Exception:  # noqa: BLE001 - missing, unreadable or partial: the run has no reliability data
        return None
    if y.shape != logit.shape or y.size == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        p = 1.0 / (1.0 + np.exp(-logit))
    p[~np.isfinite(logit)] = np.nan  # a diverged model: drawn as "diverged: no probabilities"
    return y, p


def fetch(client, mlflow_runs: list, experiments: dict[str, str], workers: int = 8) -> list[RunRecord]:
    records = [
        RunRecord(
            run_id=r.info.run_id, name=r.info.run_name or r.info.run_id[:8], experiment_id=r.info.experiment_id,
            experiment=experiments.get(r.info.experiment_id, r.info.experiment_id), status=r.info.status,
            artifact_uri=r.info.artifact_uri or "", params=dict(r.data.params), metrics=dict(r.data.metrics),
            tags=dict(r.data.tags),
        )
        for r in mlflow_runs
    ]
    ids = [r.run_id for r in records]
    for key in LOSS_CURVES:
        hist = _histories(client, ids, key, workers)
        for rec in records:
            if hist[rec.run_id]:
                rec.curves[key] = _as_curve(hist[rec.run_id])
    with ThreadPoolExecutor(max_workers=workers) as pool:
        loaded = list(pool.map(lambda rec: _load_predictions(rec.artifact_uri, client.tracking_uri), records))
    for rec, pred in zip(records, loaded, strict=True):
        if pred is not None:
            rec.val_y, rec.val_p = pred
    return records
