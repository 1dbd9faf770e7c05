"""What the baselines and the intervals add to a training run, against the same run without them.

Issue 13's cost target: baselines add <= 1 s to a 20k-student run. Measured in one process, the
same `train(cfg)` on the default cohort (20,000 students, 20 epochs, early stopping on) with
`baselines=default` and with `baselines=none baselines.n_resamples=0` (no baselines, no intervals),
alternating, `--repeats` times each; reported: medians of the whole call's wall time, the
difference, and the parts measured inside the run (`time/baseline_<name>_fit_s`). Each call
writes a run to a throwaway store in a temporary folder.

    .venv/bin/python benchmarks/bench_baselines.py [--repeats 5] [--n 20000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"
LEAN = ["mechanism.figure=false", "mechanism.page=false", "calibration.figure=false", "tracking.log_model=false"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args()

    from hydra import compose, initialize_config_dir

    from dropout_risk.config.schema import register_configs
    from dropout_risk.training.train import train

    register_configs()
    folder = tempfile.mkdtemp(prefix="bench-baselines-")
    store = [f"tracking.uri=sqlite:///{folder}/mlflow.db", f"tracking.artifact_location={folder}/artifacts"]

    def cfg(*extra: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=[*store, f"data.n_students={args.n}", *LEAN, *extra])

    with_cfg, without_cfg = cfg(), cfg("baselines=none", "baselines.n_resamples=0")
    train(without_cfg)  # warm-up: imports, the store's tables, the cohort cache
    times: dict[str, list[float]] = {"with": [], "without": []}
    fits: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for label, c in (("without", without_cfg), ("with", with_cfg)):
            t0 = time.perf_counter()
            result = train(c)
            times[label].append(time.perf_counter() - t0)
            for key, value in result.metrics.items():
                if key.startswith("time/baseline_"):
                    fits.setdefault(key, []).append(value)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"train(), {args.n:,} students, median of {args.repeats} (wall):")
    print(f"  baselines=none, no intervals: {med['without']:.3f} s")
    print(f"  baselines=default, intervals: {med['with']:.3f} s")
    print(f"  added: {med['with'] - med['without']:.3f} s ({med['with'] / med['without']:.2f}x)")
    for key, values in sorted(fits.items()):
        print(f"  {key}: {statistics.median(values):.3f} s")


if __name__ == "__main__":
    main()
