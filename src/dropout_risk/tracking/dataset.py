"""The data a run trained on as MLflow's standard dataset input (the UI's "Datasets used" column
and run page): name = the file's name or the data kind, digest = the project's data
fingerprint, source = the CSV path or the generator call, schema = the columns and the label.

Only metadata is logged (`mlflow.data.meta_dataset.MetaDataset`): no copy, no profile of the
data. `log_inputs` is one request; MLflow skips a dataset an experiment already has and an input
a run already has, so logging it again (a sweep's parent from each worker) changes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

DIGEST_CHARS = 32  # MLflow stores at most 36 characters of a dataset digest
CONTEXT = "training"  # the standard `mlflow.data.context` input tag
_KINDS = {"f": "double", "i": "long", "u": "long", "b": "boolean", "O": "string"}
_logged: set[tuple[str, str]] = set()  # (run id, digest) this process has logged


def dataset_digest(fingerprint: dict) -> str:
    """The digest of the data behind the `data_fingerprint` tag: sha256 of its canonical JSON
    without the path (the same file may sit elsewhere) and the split (a run's split of the data
    is recorded in the input tag `split_fingerprint`), first 32 hex digits."""
    data = {k: v for k, v in fingerprint.items() if k not in ("path", "split")}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:DIGEST_CHARS]


def dataset_source(fingerprint: dict) -> tuple[str, str]:
    """(source type, source): ("local", the CSV path) or ("code", "generator: cohort(n=..., seed=...)")."""
    if "path" in fingerprint:
        return "local", str(fingerprint["path"])
    return "code", f"generator: cohort(n={fingerprint.get('n_students')}, seed={fingerprint.get('seed')}, " \
                   f"version={fingerprint.get('generator')})"


def dataset_name(data_name: str, fingerprint: dict) -> str:
    """The file's name for a CSV (`data.csv`), else the data kind (`cohort`)."""
    return Path(str(fingerprint["path"])).name if "path" in fingerprint else data_name


def make_dataset(data_name: str, fingerprint: dict, columns: dict[str, Any], label: str = "dropout"):
    """An `mlflow.data` dataset (metadata only) for data named `data_name` with the project's
    `fingerprint` (as in the data_fingerprint tag); `columns` maps the feature columns to their
    numpy dtypes; the label is a `long` column."""
    from mlflow.data.dataset_source import DatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    kind, where = dataset_source(fingerprint)

    class Source(DatasetSource):  # not loadable back: only where the data came from
        @staticmethod
        def _get_source_type() -> str:
            return kind

        def load(self, **kwargs):
            raise NotImplementedError

        @staticmethod
        def _can_resolve(raw_source) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source):
            raise NotImplementedError

        def to_dict(self) -> dict[str, str]:
            return {"uri": where} if kind == "local" else {"generator": where.removeprefix("generator: ")}

        @classmethod
        def from_dict(cls, source_dict):
            return cls()

    specs = [ColSpec(_KINDS.get(getattr(dtype, "kind", "f"), "double"), str(name)) for name, dtype in columns.items()]
    schema = Schema([*specs, ColSpec("long", label)])
    return MetaDataset(Source(), name=dataset_name(data_name, fingerprint), digest=dataset_digest(fingerprint),
                       schema=schema)


def log_dataset(client, run_ids: list[str], data_name: str, fingerprint: dict, columns: dict[str, Any]) -> None:
    """The dataset input (context `training`, the split's fingerprint as an input tag) on each of
    `run_ids` this process has not yet given it: one request per run."""
    from mlflow.entities import DatasetInput, InputTag

    dataset = make_dataset(data_name, fingerprint, columns)._to_mlflow_entity()
    tags = [InputTag("mlflow.data.context", CONTEXT)]
    if "split" in fingerprint:
        tags.append(InputTag("split_fingerprint", str(fingerprint["split"])))
    for run_id in run_ids:
        if (run_id, dataset.digest) in _logged:
            continue
        client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags)])
        _logged.add((run_id, dataset.digest))
