"""What the baselines and the intervals add to a training run, against the same run without them.

Issue 13's cost target: baselines add <= 1 s to a 20k-student run. Measured in one process, the
same `train(cfg)` on the default cohort (20,000 students, 20 epochs, early stopping on) three
ways, alternating, `--repeats` times each: `baselines=none baselines.n_resamples=0` (neither
baselines nor intervals), `baselines=none` (the test intervals only) and `baselines=default`
(both, and the verdict). Reported: medians of the whole call's wall time, the differences, and
the fits measured inside the run (`time/baseline_<name>_fit_s`). Each call
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

    configs = {"neither": cfg("baselines=none", "baselines.n_resamples=0"), "intervals": cfg("baselines=none"),
               "both": cfg()}
    train(configs["both"])  # warm-up: imports, the store's tables, the cohort cache
    times: dict[str, list[float]] = {k: [] for k in configs}
    fits: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for label, c in configs.items():
            t0 = time.perf_counter()
            result = train(c)
            times[label].append(time.perf_counter() - t0)
            for key, value in result.metrics.items():
                if key.startswith("time/baseline_"):
                    fits.setdefault(key, []).append(value)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"train(), {args.n:,} students, median of {args.repeats} (wall):")
    print(f"  baselines=none, no intervals (the baseline): {med['neither']:.3f} s")
    print(f"  baselines=none, test intervals:              {med['intervals']:.3f} s "
          f"(+{med['intervals'] - med['neither']:.3f} s)")
    print(f"  baselines=default, intervals and verdict:    {med['both']:.3f} s "
          f"(+{med['both'] - med['neither']:.3f} s; the baselines and verdict alone +{med['both'] - med['intervals']:.3f} s)")
    for key, values in sorted(fits.items()):
        print(f"  {key}: {statistics.median(values):.3f} s")


if __name__ == "__main__":
    main()
