"""Whole-process wall time of `pipelines/train.py` (issue 18): what a user waits for.

Two cases, each run from two checkouts in alternation (the baseline first), in the same run of
this script so that the machine's load moves both alike:
  default    train.py as a user first runs it: 20,000 students, 20 epochs (early stopping on);
  epochs100  5,000 students, 100 epochs, early stopping off: 100 per-epoch reliability diagrams.

    .venv/bin/python benchmarks/bench_cli.py --baseline /tmp/base --repeats 3
    # /tmp/base: git worktree add /tmp/base <commit before the change>

The baseline checkout runs with this venv and PYTHONPATH=<baseline>/src (its own package code).
Each run gets a fresh working folder (a new MLflow store: as a user's first run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "default": [],
    "epochs100": ["data.n_students=5000", "trainer.max_epochs=100", "trainer.early_stopping.enabled=false"],
}


def wall(root: Path, args: list[str]) -> float:
    with tempfile.TemporaryDirectory() as work:
        # a warm store: the first open of a new store migrates it (~2 s), which is not this benchmark's subject
        env = {**os.environ, "PYTHONPATH": str(root / "src")}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(root / "pipelines" / "train.py"), *args], cwd=work, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{root}: train.py {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="checkout of the commit to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    a = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for case in a.cases:
        times: dict[str, list[float]] = {"baseline": [], "this": []}
        for _ in range(a.repeats):
            times["baseline"].append(wall(a.baseline, CASES[case]))
            times["this"].append(wall(ROOT, CASES[case]))
        base, this = statistics.median(times["baseline"]), statistics.median(times["this"])
        print(f"{case:10s} baseline {base:6.2f} s  this {this:6.2f} s  ratio {this / base:.2f}  "
              f"(runs: {', '.join(f'{t:.1f}' for t in times['baseline'])} | {', '.join(f'{t:.1f}' for t in times['this'])})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
