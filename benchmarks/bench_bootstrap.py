"""Time of `analysis.bootstrap.intervals` against the naive bootstrap loop, measured in the same run.

What a report pays for 95% intervals of the headline test metrics: `intervals` on a 3,000-row
split with 1,000 stratified resamples (every metric on all resamples at once, weighted by the
resample counts). The baseline is the usual way: a Python loop over the same resamples, each
materialised (`np.repeat` by its counts) and passed to `binary_metrics`; it is timed on
`--naive-resamples` of them and scaled to the full number (its cost is linear in them).
`binary_metrics` also computes the adaptive ECE and the MCE, which `intervals` does not: the
baseline is the function a caller would reach for, not a minimal one. Reported: median and best
of `--repeats` alternating measurements, CPU time of this process and wall time, and the ratio
naive / ours, the number to compare across machines. The naive values are checked against ours.

    .venv/bin/python benchmarks/bench_bootstrap.py [--repeats 5] [--n 3000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(2.0, 5.0, size=n)  # a test split's predictions: prevalence ~0.29, as the cohort
    return (rng.uniform(size=n) < p).astype(np.int64), p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=3000, help="rows in the split")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--naive-resamples", type=int, default=50, help="resamples the naive loop is timed on")
    args = ap.parse_args()

    from dropout_risk.analysis.bootstrap import HEADLINE, intervals, metric_samples, resample_counts
    from dropout_risk.analysis.metrics import binary_metrics

    y, p = _data(args.n)
    counts = resample_counts(y, args.resamples, seed=0)[: args.naive_resamples].astype(np.int64)
    rows = np.arange(args.n)

    def ours() -> None:
        intervals(y, p, n_resamples=args.resamples, seed=0)

    def naive() -> list[dict[str, float]]:
        return [binary_metrics(y[r], p[r]) for r in (np.repeat(rows, c) for c in counts)]

    ours()  # warm-up: allocator, BLAS
    fast = metric_samples(y, p, counts)
    slow = naive()
    gap = max(abs(fast[k][b] - slow[b][k]) for k in HEADLINE for b in range(len(slow)))

    scale = args.resamples / args.naive_resamples
    timings: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "wall": []} for name in ("ours", "naive")}
    for _ in range(args.repeats):
        for name, fn, factor in (("ours", ours, 1.0), ("naive", naive, scale)):
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            timings[name]["cpu"].append((time.process_time() - c0) * factor)
            timings[name]["wall"].append((time.perf_counter() - w0) * factor)

    med = statistics.median
    print(f"95% intervals of {len(HEADLINE)} metrics, {args.n} rows, {args.resamples} stratified resamples; "
          f"{args.repeats} alternating repeats; naive timed on {args.naive_resamples} resamples x {scale:g}")
    print(f"naive vs ours on the same {args.naive_resamples} resamples: max |difference| {gap:.1e}")
    print(f"{'':42s}{'CPU median':>11s}{'CPU best':>10s}{'wall median':>13s}")
    for name, label in (("naive", "naive loop of binary_metrics (baseline)"), ("ours", "intervals (vectorised)")):
        t = timings[name]
        print(f"{label:42s}{med(t['cpu']):10.3f}s{min(t['cpu']):9.3f}s{med(t['wall']):12.3f}s")
    ratio_cpu = med(timings["naive"]["cpu"]) / med(timings["ours"]["cpu"])
    ratio_wall = med(timings["naive"]["wall"]) / med(timings["ours"]["wall"])
    print(f"ratio naive / ours: {ratio_cpu:.1f}x (CPU median), {ratio_wall:.1f}x (wall median)")
    print(f"target: intervals <= 0.3 s; here {med(timings['ours']['wall']):.3f} s wall median")


if __name__ == "__main__":
    main()
