"""Fit time of train() against a plain torch loop of the seed, measured in the same process.

Same model (MLP [64,32] relu), same data (cohort, 20k students -> 14k training rows), same
optimiser (AdamW lr 1e-3), batch 256, 20 epochs. Reported: median of `--repeats` alternating
runs, and the ratio train()/plain. Also the naive Lightning way (DataLoader(TensorDataset)) for
reference, and optionally the wall time of `make run` as a whole process.

    .venv/bin/python benchmarks/bench_train.py [--repeats 3] [--make-run]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def compose(overrides):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from dropout_risk.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hcompose("config", overrides=overrides)


def plain_loop(cfg, fused: bool | None = None) -> float:
    """The seed: forward, loss, backward, step over in-memory slices. fused=None is the seed's
    AdamW; fused=True the optimiser train() builds from conf/optim/adamw.yaml, so the ratio
    against it is Lightning's and our bookkeeping's overhead alone."""
    from dropout_risk.data.loaders import load_data
    from dropout_risk.data.module import StudentDataModule
    from dropout_risk.model.mlp import MLP

    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    x, y = dm.tensors["train"]
    torch.manual_seed(cfg.seed)
    net = MLP(dm.n_features, list(cfg.model.hidden), cfg.model.activation)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, fused=fused)
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    for _ in range(cfg.trainer.max_epochs):
        order = torch.randperm(len(x), generator=g)
        xs, ys = x[order], y[order]
        for i in range(0, len(x), cfg.data.batch_size):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xs[i : i + 256]), ys[i : i + 256])
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def lightning_dataloader(cfg) -> float:
    """The usual way: a LightningModule fed by DataLoader(TensorDataset), automatic optimisation."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from dropout_risk.data.loaders import load_data
    from dropout_risk.data.module import StudentDataModule
    from dropout_risk.model.mlp import MLP

    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)

    class Plain(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = MLP(dm.n_features, list(cfg.model.hidden), cfg.model.activation)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.binary_cross_entropy_with_logits(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=cfg.optim.lr)

    torch.manual_seed(cfg.seed)
    loader = DataLoader(TensorDataset(*dm.tensors["train"]), batch_size=256, shuffle=True)
    trainer = pl.Trainer(max_epochs=cfg.trainer.max_epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    t0 = time.perf_counter()
    trainer.fit(Plain(), loader)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--make-run", action="store_true", help="also time `make run` as a whole process")
    args = ap.parse_args()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    from dropout_risk.training.train import train

    tmp = tempfile.mkdtemp()
    cfg = compose([f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"tracking.artifact_location={tmp}/a"])
    train(compose([f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"tracking.artifact_location={tmp}/a",
                   "trainer.max_epochs=1"]))  # warm-up: first optimizer, store tables
    plain_loop(cfg)
    plain, plain_fused, ours, ours_total, naive = [], [], [], [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(cfg))
        plain_fused.append(plain_loop(cfg, fused=True))
        t0 = time.perf_counter()
        result = train(cfg)
        ours_total.append(time.perf_counter() - t0)
        ours.append(result.metrics["time/fit_s"])
        naive.append(lightning_dataloader(cfg))
    med = statistics.median
    print(f"torch threads: {torch.get_num_threads()}, repeats: {args.repeats}")
    print(f"plain torch loop (fit)                 {med(plain):6.2f} s  1.00x")
    print(f"plain loop, fused AdamW as train()     {med(plain_fused):6.2f} s  {med(plain_fused) / med(plain):.2f}x")
    print(f"train() fit (time/fit_s)               {med(ours):6.2f} s  {med(ours) / med(plain):.2f}x"
          f"  ({med(ours) / med(plain_fused):.2f}x the fused plain loop)")
    print(f"train() whole call (+ metrics, plots)  {med(ours_total):6.2f} s  {med(ours_total) / med(plain):.2f}x")
    print(f"Lightning + DataLoader(TensorDataset)  {med(naive):6.2f} s  {med(naive) / med(plain):.2f}x")
    if args.make_run:
        t0 = time.perf_counter()
        subprocess.run(["make", "run"], cwd=ROOT, check=True, capture_output=True)
        print(f"make run (after set-up), whole process {time.perf_counter() - t0:6.2f} s")


if __name__ == "__main__":
    main()
