"""Fixtures shared by the tests: compose the real config once per test with small sizes, and
a real MLflow store (SQLite + artifacts) in a temp folder. Plain helpers (paths, TINY,
run_pipeline, ...) live in helpers.py."""

from __future__ import annotations

import os
import shutil

# Under pytest-xdist every worker (and each pipeline process a test starts) shares the machine's
# cores with the others: one intra-op thread each, not one per core (measured on 2 cores: the fast
# suite took 96-102 s with torch's and OpenMP's default threads, 86 s with one). Set before torch
# and numpy load their thread pools; a user's own setting wins.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import pytest
from helpers import CONF, TINY
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from dropout_risk.config.schema import register_configs

register_configs()


@pytest.fixture(scope="session")
def empty_store_db(tmp_path_factory) -> str:
    """A real, empty MLflow SQLite store, migrated once per MLflow version and kept beside pytest's
    temp folder for later sessions: MLflow's schema migration costs ~2 s per new store (per
    xdist worker, per session), a copy of this file costs nothing (``new_store``). Made under a
    lock, then renamed into place, so that two workers never see a half-migrated file."""
    import fcntl
    import tempfile
    from pathlib import Path

    import mlflow

    root = Path(tempfile.gettempdir()) / f"dropout-risk-tests-{os.getuid()}"  # outlives a session
    root.mkdir(exist_ok=True)
    cached = root / f"mlflow-{mlflow.__version__}-empty-store.db"
    with open(root / f"{cached.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cached.exists():
            fresh = tmp_path_factory.mktemp("template") / "mlflow.db"
            MlflowClient(tracking_uri=f"sqlite:///{fresh}").search_experiments()  # creates and migrates it
            shutil.copyfile(fresh, root / f"{cached.name}.part")
            (root / f"{cached.name}.part").rename(cached)
    return str(cached)


@pytest.fixture(scope="session")
def new_store(empty_store_db):
    """new_store(folder) -> {"uri", "artifacts", "root"}: a real MLflow store of its own in
    ``folder`` (a copy of the migrated empty one), for tests and subprocesses that need their own."""

    def _new(folder) -> dict[str, str]:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_store_db, folder / "mlflow.db")
        return {"uri": f"sqlite:///{folder}/mlflow.db", "artifacts": str(folder / "artifacts"), "root": str(folder)}

    return _new


@pytest.fixture(scope="session")
def store(tmp_path_factory, new_store) -> dict[str, str]:
    """One real MLflow store for the session."""
    return new_store(tmp_path_factory.mktemp("mlruns"))


@pytest.fixture
def client(store) -> MlflowClient:
    return MlflowClient(tracking_uri=store["uri"])


GROUPS = frozenset(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
_composed: dict[tuple[str, ...], object] = {}  # per test process: (config, group choices) -> composed


def compose_fast(config: str, overrides: list[str]):
    """What hydra.compose(config, overrides) returns, in ~5 ms instead of ~85 ms: Hydra composes
    the defaults (config name and group choices) once per process, and each call applies its value
    overrides to a copy with Hydra's own `_apply_overrides_to_config`, which is what compose does
    after composing the defaults. Anything that call refuses goes through a full compose, so that
    errors are Hydra's own. tests/config/test_fast_compose.py checks the two agree."""
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001 - Hydra's compose reports it
        parsed = None
    if parsed is not None and not any(o.is_sweep_override() or o.is_hydra_override() for o in parsed):
        groups = [o for o in parsed if o.key_or_group.split("@")[0] in GROUPS]
        key = (config, *(o.input_line for o in groups))
        try:
            if key not in _composed:
                with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                    _composed[key] = compose(config, overrides=[o.input_line for o in groups])
            cfg = copy.deepcopy(_composed[key])
            ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if o not in groups], cfg)
            return cfg
        except Exception:  # noqa: BLE001 - the full compose raises Hydra's own error
            pass
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config, overrides=list(overrides))


@pytest.fixture
def make_cfg(store):
    """make_cfg("optim=sgd", ...) -> the composed config, tiny, writing to the temp store."""

    def _make(*overrides: str, tiny: bool = True, config: str = "config"):
        base = [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}"]
        if config == "sweep":  # sweeps measure sharpness (+30% fit): tests that check it turn it back on
            base.append("stability.every_n_steps=0")
        return compose_fast(config, [*(TINY if tiny else []), *base, *overrides])

    return _make
