"""Throughput of the same 40-trial sweep (12 lrs x 3 seeds + 4 refine, populations): local journal
file vs PostgreSQL + MLflow tracking server, with 1 and 2 workers (issues 6 and 15). Needs PostgreSQL on 127.0.0.1:5432 (trust auth).

    .venv/bin/python benchmarks/bench_scale_out.py [--students 3000] [--epochs 5]

Each configuration is a fresh study (and, for the server path, fresh databases); reported:
wall seconds of the whole sweep command(s), trials per minute, and the per-trial overhead of
the server path against the journal-file path.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PG = "postgresql://postgres@127.0.0.1:5432"
N_TRIALS = 12 * 3 + 4  # sweep.seeds=3 (the default)


def sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_args(common: list[str], study: str) -> list[str]:
    return [PY, str(ROOT / "pipelines" / "sweep.py"), *common, f"sweep.study={study}",
            "sweep.n_scan=12", "sweep.n_refine=4", "optim=sgd", "sweep.lr_min=0.01", "sweep.lr_max=1e3"]


def wait_for_study(storage_url: str, study: str) -> None:
    """A role=worker refuses a study that does not exist yet: start it once the coordinator made it."""
    import optuna

    from dropout_risk.sweep.storage import make_storage

    storage = make_storage(storage_url)
    while True:
        try:
            if "parent_run_id" in optuna.load_study(study_name=study, storage=storage).user_attrs:
                return
        except KeyError:
            pass
        time.sleep(0.2)


def timed(cmds: list[list[str]], cwd: str, before_second=None) -> float:
    t0 = time.perf_counter()
    procs = []
    for i, c in enumerate(cmds):
        if i == 1 and before_second:
            before_second()
        procs.append(subprocess.Popen(c, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            sys.exit(err[-2000:])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=5)
    a = ap.parse_args()
    size = [f"data.n_students={a.students}", f"trainer.max_epochs={a.epochs}"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        local = [*size, f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"tracking.artifact_location={tmp}/art",
                 f"sweep.storage=journal://{tmp}/journal.log"]
        results["journal file + SQLite, 1 worker"] = timed([sweep_args(local, "j1")], tmp)
        results["journal file + SQLite, 2 workers"] = timed([[*sweep_args(local, "j2"), "sweep.n_workers=2"]], tmp)

        tag = uuid.uuid4().hex[:8]
        dbs = [f"bench_mlflow_{tag}", f"bench_optuna_{tag}"]
        for db in dbs:
            sql(f"CREATE DATABASE {db}")
        port = free_port()
        server = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "mlflow"), "server", "--backend-store-uri", f"{PG}/{dbs[0]}",
             "--serve-artifacts", "--artifacts-destination", f"{tmp}/served", "--host", "127.0.0.1",
             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            from mlflow import MlflowClient

            uri = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    MlflowClient(uri).search_experiments(max_results=1)
                    break
                except Exception:  # noqa: BLE001
                    time.sleep(1)
            remote = [*size, "tracking=server", f"tracking.uri={uri}", f"sweep.storage={PG}/{dbs[1]}"]
            results["PostgreSQL + tracking server, 1 worker"] = timed([sweep_args(remote, "p1")], tmp)
            # two separate commands: each must be told its share of a phase (else the first takes it all)
            coordinator = [*sweep_args(remote, "p2"), "sweep.population_size=18"]
            results["PostgreSQL + tracking server, 2 processes (coordinator + role=worker)"] = timed(
                [coordinator, [*coordinator, "sweep.role=worker"]], tmp,
                before_second=lambda: wait_for_study(f"{PG}/{dbs[1]}", "p2"))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
            for db in dbs:
                sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    for name, wall in results.items():
        print(f"{name:72s} {wall:6.1f} s  {N_TRIALS / wall * 60:5.1f} trials/min")
    j1, p1 = results["journal file + SQLite, 1 worker"], results["PostgreSQL + tracking server, 1 worker"]
    print(f"server path overhead per trial (1 worker): {(p1 - j1) / N_TRIALS:+.2f} s")


if __name__ == "__main__":
    main()
