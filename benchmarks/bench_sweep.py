"""Wall time of the default sweep (what `make run` runs) against the usual way, measured in
the same run; and peak memory against the number of trials.

    .venv/bin/python benchmarks/bench_sweep.py            # default sweep (2 workers) vs naive
    .venv/bin/python benchmarks/bench_sweep.py --memory   # peak RSS for 8 vs 24 scan trials

The usual way ("naive", lightning-hydra-template style): one process, for each of the same 80
trials (the 24 scan lrs x 3 seeds, and the 8 lrs the sweep's TPE refine picked, read from its
output) a fresh Lightning Trainer fed by DataLoader(TensorDataset), automatic optimisation,
EarlyStopping on the validation loss with the sweep's patience (5; it also stops a non-finite
loss at the epoch's end), and Lightning's MLFlowLogger logging every 5th step, as the sweep's
trials do, to the same kind of SQLite store. It logs no final metrics, diagrams or artifacts,
which the sweep's trials do.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run_sweep(args: list[str], out: list[str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of the largest process) of one sweep in a fresh folder. A small
    wrapper process runs it, so the peak is this sweep's alone (ru_maxrss of children is a running
    maximum over every child a process has waited for)."""
    wrapper = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([PY, "-c", wrapper, PY, str(ROOT / "pipelines" / "sweep.py"), *args], cwd=tmp,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(proc.stdout[-2000:] + proc.stderr[-2000:])
        if out is not None:
            out.append(proc.stdout)
        return wall, int(proc.stderr.strip().splitlines()[-1]) / 1024


NAIVE = r'''
import json, sys, time, numpy as np, torch, lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import MLFlowLogger
from torch.utils.data import DataLoader, TensorDataset
from dropout_risk.data.cohort import generate_cohort
from dropout_risk.model.mlp import MLP
t0 = time.perf_counter()
data = generate_cohort(20000, 0)
X = data.features.to_numpy(np.float32); X = (X - X.mean(0)) / X.std(0)
Y = data.y.astype(np.float32)
x, y = torch.from_numpy(X[:14000]), torch.from_numpy(Y[:14000])
xv, yv = torch.from_numpy(X[14000:17000]), torch.from_numpy(Y[14000:17000])
class M(pl.LightningModule):
    def __init__(self, lr):
        super().__init__(); self.net = MLP(x.shape[1], [64, 32], "relu"); self.lr = lr
    def training_step(self, b, _):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self.net(b[0]), b[1])
        self.log("train/loss", loss); return loss
    def validation_step(self, b, _):
        self.log("val/loss", torch.nn.functional.binary_cross_entropy_with_logits(self.net(b[0]), b[1]))
    def configure_optimizers(self): return torch.optim.AdamW(self.parameters(), lr=self.lr)
for lr, seed in json.loads(sys.argv[2]):
    torch.manual_seed(seed)
    logger = MLFlowLogger(experiment_name="naive", tracking_uri=f"sqlite:///{sys.argv[1]}/mlflow.db")
    trainer = pl.Trainer(max_epochs=20, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=5, accelerator="cpu",
                         callbacks=[EarlyStopping("val/loss", patience=5)])
    order = torch.Generator().manual_seed(seed)
    trainer.fit(M(float(lr)), DataLoader(TensorDataset(x, y), batch_size=256, shuffle=True, generator=order),
                DataLoader(TensorDataset(xv, yv), batch_size=4096))
print(time.perf_counter() - t0)
'''


def run_naive(trials: list[tuple[float, int]]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([PY, "-c", NAIVE, tmp, json.dumps(trials)], capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="runs of the default sweep with 2 and with 1 worker")
    args = ap.parse_args()
    if args.memory:
        for n in (8, 24, 48):
            wall, rss = run_sweep([f"sweep.n_scan={n}", "sweep.n_refine=0", "trainer.max_epochs=5"])
            print(f"scan {n:2d} trials, 1 worker: {wall:6.1f} s, peak RSS {rss:6.0f} MiB")
        return
    two, one, outputs = [], [], []
    for _ in range(args.repeats):  # alternating, so drifting machine load hits both alike
        wall, rss = run_sweep(["sweep.n_workers=2"], outputs)
        two.append(wall)
        print(f"default sweep (24 lrs x 3 seeds + 8 refine = 80 trials, 20k students, 20 epochs), 2 workers: "
              f"{wall:6.1f} s (peak RSS {rss:.0f} MiB)", flush=True)
        wall, _ = run_sweep([])
        one.append(wall)
        print(f"same sweep, 1 worker:                                              {wall:6.1f} s", flush=True)
    med2, med1 = statistics.median(two), statistics.median(one)
    print(f"median of {args.repeats}: 2 workers {med2:.1f} s (range {min(two):.1f}-{max(two):.1f}), "
          f"1 worker {med1:.1f} s (range {min(one):.1f}-{max(one):.1f})")
    if not args.skip_naive:
        scan = [(float(lr), seed) for lr in np.geomspace(1e-4, 10, 24) for seed in range(3)]
        refine = [(float(lr), 0) for lr in re.findall(r"refine\] lr=(\S+)", outputs[-1])]
        naive = run_naive(scan + refine)
        print(f"naive: {len(scan) + len(refine)} Trainers + DataLoader + MLFlowLogger + EarlyStopping, one process: "
              f"{naive:6.1f} s ({naive / med2:.1f}x the 2-worker sweep's median)")


if __name__ == "__main__":
    main()
