"""Population engine (issue 15): K members in one fit vs K plain fits, per-member cost with
tracking, and peak memory against K.

    .venv/bin/python benchmarks/bench_population.py [--k 32] [--threads 1] [--memory 8,32,96]

1. fit: K members of MLP [64, 32] (20 epochs, cohort of 20,000: 14,000 training rows, AdamW, lrs
   log-spaced 1e-4..0.2, early stopping off so every member trains all epochs) as one population,
   vs the same K trained one after another by the plain module (DropoutRiskModule, one Trainer
   each, what a sweep trial runs). Ratios from the same run.
2. per member with tracking: train_population of K members into a fresh MLflow store (a sweep
   trial's config: final diagram only, no baselines or bootstrap intervals, every 5th step loss
   to MLflow), total wall / K.
3. memory: peak RSS during the fit of a population of each K (20 epochs; the peak is reset after
   imports and data via /proc/self/clear_refs), minus that of K = 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cfg(*extra: str):
    from hydra import compose, initialize_config_dir

    from dropout_risk.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("sweep", overrides=["baselines=none", *extra])


def _population_fit(cfg, dm, lrs, epochs: int, stability_every: int = 0) -> float:
    import lightning.pytorch as pl

    from dropout_risk.model.optim import optimizer_factory
    from dropout_risk.training.population import Member, PopulationBatches, PopulationModule
    from dropout_risk.training.stability import MemberSharpness, eval_batch

    members = [Member(float(lr), 0) for lr in lrs]
    module = PopulationModule(dm.n_features, list(cfg.model.hidden), cfg.model.activation, cfg.loss.name,
                              optimizer_factory(cfg.optim), members)
    module.val_tensors = dm.tensors["val"]
    st = cfg.stability
    if stability_every:
        module.stability = MemberSharpness(*eval_batch(*dm.tensors["train"], st.eval_rows), stability_every, st.iters,
                                           st.iters_per_estimate, [m.lr for m in members])
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False, limit_val_batches=0, num_sanity_val_steps=0)
    x, y = dm.tensors["train"]
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=PopulationBatches(x, y, cfg.data.batch_size, [0] * len(lrs)))
    return time.perf_counter() - t0


def _plain_fits(cfg, dm, lrs, epochs: int) -> float:
    import lightning.pytorch as pl
    import torch

    from dropout_risk.model.module import DropoutRiskModule
    from dropout_risk.model.optim import optimizer_factory
    from dropout_risk.training.guard import DivergenceGuard
    from dropout_risk.training.validation import EpochValidation

    t0 = time.perf_counter()
    for lr in lrs:
        cfg.optim.lr = float(lr)
        torch.manual_seed(0)
        module = DropoutRiskModule(dm.n_features, list(cfg.model.hidden), cfg.model.activation, cfg.loss.name,
                                   optimizer_factory(cfg.optim), grad_norm=False)
        trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_model_summary=False,
                             enable_progress_bar=False, limit_val_batches=0, num_sanity_val_steps=0,
                             callbacks=[EpochValidation(*dm.tensors["val"]), DivergenceGuard(10.0)])
        trainer.fit(module, datamodule=dm)
    return time.perf_counter() - t0


def _memory_child(k: int) -> None:
    import numpy as np
    import torch

    from dropout_risk.data.loaders import load_data
    from dropout_risk.data.module import StudentDataModule

    torch.set_num_threads(1)
    cfg = _cfg("trainer.early_stopping.enabled=false")
    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS, so imports and data do not count
    _population_fit(cfg, dm, np.geomspace(1e-4, 0.2, k), epochs=20)
    hwm = next(int(ln.split()[1]) for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM"))
    print(json.dumps({"k": k, "maxrss_kib": hwm}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory", default="8,32,96", help="population sizes for peak RSS; '' skips")
    ap.add_argument("--memory-child", type=int, default=None)
    ap.add_argument("--stability", type=int, default=0,
                    help="only measure the fit with sharpness every N steps vs without (issue 16), alternating")
    args = ap.parse_args()
    if args.memory_child is not None:
        return _memory_child(args.memory_child)

    import numpy as np
    import torch

    from dropout_risk.data.loaders import load_data
    from dropout_risk.data.module import StudentDataModule
    from dropout_risk.training.train_population import MemberSpec, member_config, train_population

    torch.set_num_threads(args.threads)
    cfg = _cfg("trainer.early_stopping.enabled=false", f"trainer.num_threads={args.threads}")
    dm = StudentDataModule(load_data(cfg.data, cfg.seed), cfg.data, cfg.seed)
    lrs = np.geomspace(1e-4, 0.2, args.k)
    _population_fit(cfg, dm, lrs[:2], epochs=1)  # warm-up
    if args.stability:
        runs = {0: [], args.stability: []}
        for _ in range(3):
            for every in runs:
                runs[every].append(_population_fit(cfg, dm, lrs, epochs=20, stability_every=every))
        base, with_s = min(runs[0]), min(runs[args.stability])
        print(f"fit, {args.k} members, 20 epochs: without sharpness {base:.2f} s, with sharpness every "
              f"{args.stability} steps {with_s:.2f} s (best of 3 each) -> +{100 * (with_s / base - 1):.0f}%")
        return
    pop = _population_fit(cfg, dm, lrs, epochs=20)
    plain = _plain_fits(cfg, dm, lrs, epochs=20)
    print(f"fit, {args.k} members, 20 epochs, {args.threads} thread(s): population {pop:.2f} s, "
          f"{args.k} plain fits {plain:.2f} s -> {plain / pop:.2f}x faster ({pop / args.k:.3f} s per member)")

    with tempfile.TemporaryDirectory() as tmp:
        # what a sweep trial runs (sweep/trial.py): no per-trial baselines or bootstrap intervals
        tcfg = _cfg(f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"trainer.num_threads={args.threads}",
                    "baselines.n_resamples=0")
        specs = [MemberSpec(member_config(tcfg, float(lr), None, f"m{i}")) for i, lr in enumerate(lrs)]
        train_population(specs[:1])  # creates the store (its schema migration is not a member's cost)
        t0 = time.perf_counter()
        results = train_population(specs)
        total = time.perf_counter() - t0
        fit = results[0].metrics["population/fit_s"]
    print(f"train_population, {args.k} members with tracking: {total:.2f} s ({total / args.k:.3f} s per member; "
          f"fit {fit:.2f} s, runs and reports {total - fit:.2f} s)")

    rss = {}
    for k in [1, *map(int, args.memory.split(","))] if args.memory else []:
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(k)], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
        rss[k] = json.loads(out)["maxrss_kib"] / 1024
    for k, mib in rss.items():
        if k > 1:
            print(f"peak RSS, K = {k}: {mib:.0f} MiB ({mib - rss[1]:+.0f} MiB over K = 1, "
                  f"{(mib - rss[1]) / (k - 1):.2f} MiB per extra member)")


if __name__ == "__main__":
    main()
