"""Time pipelines/compare on 32 runs (the issue's target: a few seconds).

Makes 32 tiny train() runs as the trials of one sweep parent in a temporary store (SGD and
AdamW over a log grid of learning rates; the largest SGD ones diverge), then times
  - compare() in-process: first call (opens the store) and a second call, split into
    select / fetch / report (figures + files) / log (the comparison run);
  - the fetch done the naive way for contrast (get_run, one get_metric_history per run per
    curve, one download_artifacts per run);
  - `pipelines/compare.py sweep=<parent>` as a whole process (imports included).

    .venv/bin/python benchmarks/bench_compare.py [--runs 32] [--epochs 3] [--students 1200] [--store DIR]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def compose(overrides):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from dropout_risk.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hcompose("config", overrides=overrides)


def make_runs(uri: str, artifacts: str, n: int, epochs: int, students: int) -> str:
    """n tiny runs as trials of one sweep parent; returns the parent's run id."""
    from dropout_risk.tracking.run import Run
    from dropout_risk.training.train import train

    base = [f"tracking.uri={uri}", f"tracking.artifact_location={artifacts}", "tracking.experiment=bench-compare",
            f"data.n_students={students}", f"trainer.max_epochs={epochs}", "data.batch_size=128",
            "model.hidden=[16,8]", "tracking.log_model=false"]
    parent = Run.start(uri, "bench-compare", artifacts, "bench-sweep", tags={"sweep_id": "bench"})
    lrs = np.logspace(-3, 2, n // 2)
    t0 = time.perf_counter()
    for i in range(n):
        optim, lr = ("sgd", lrs[i // 2] * 10) if i % 2 else ("adamw", lrs[i // 2] / 10)
        train(compose([*base, f"optim={optim}", f"optim.lr={lr:.4g}"]), parent_run_id=parent.run_id,
              tags={"sweep_id": "bench", "trial": str(i), "phase": "scan"})
    parent.end("FINISHED")
    print(f"made {n} runs in {time.perf_counter() - t0:.1f} s")
    return parent.run_id


def naive_fetch(uri: str, run_ids: list[str]) -> float:
    """One request per run for params/metrics, per run per curve, per run for predictions."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in run_ids:
            client.get_run(run_id)
            for key in ("train/loss", "val/loss"):
                client.get_metric_history(run_id, key)
            client.download_artifacts(run_id, "predictions/predictions.npz", tmp)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--students", type=int, default=1200)
    ap.add_argument("--store", help="a folder to keep (and reuse) the store in; default: a temporary one")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    root = Path(args.store or tempfile.mkdtemp(prefix="bench_compare_")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri, artifacts = f"sqlite:///{root}/mlflow.db", str(root / "artifacts")
    parent_file = root / f"parent_{args.runs}_{args.epochs}_{args.students}.txt"
    if parent_file.exists():
        parent = parent_file.read_text().strip()
    else:
        parent = make_runs(uri, artifacts, args.runs, args.epochs, args.students)
        parent_file.write_text(parent)

    from dropout_risk.compare.run import compare

    timings = []
    for attempt in ("first call (opens the store)", "second call"):
        t0 = time.perf_counter()
        result = compare(sweep=parent, tracking_uri=uri, out_dir=root / "out", max_runs=args.runs)
        wall = time.perf_counter() - t0
        s = result.seconds
        timings.append(wall)
        print(f"compare() {attempt:<30} {wall:6.2f} s  (select {s['select_s']:.2f}, fetch {s['fetch_s']:.2f}, "
              f"report {s['report_s']:.2f}, log {s['log_s']:.2f}) on {len(result.runs)} runs")
    points = sum(len(r.curves.get("train/loss", ((), ()))[0]) for r in result.runs)
    print(f"  {points} train/loss points, {sum(r.has_reliability for r in result.runs)} reliability panels")
    print(f"naive fetch (per-run requests)          {naive_fetch(uri, [r.run_id for r in result.runs]):6.2f} s  "
          f"vs bulk fetch {result.seconds['fetch_s']:.2f} s")

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "compare.py"), f"sweep={parent}",
                           f"tracking.uri={uri}", f"out_dir={root / 'out_cli'}", f"max_runs={args.runs}"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(proc.returncode)
    print(f"pipelines/compare.py, whole process     {wall:6.2f} s  (imports and store set-up included)")
    print(f"store: {root}")


if __name__ == "__main__":
    main()
