"""Rendering time of one reliability diagram to PNG, against a baseline measured in the same run.

What a training run pays per logged diagram (one per epoch, tracking.reliability_every_n_epochs):
`reliability_diagram` on 20,000 validation predictions, drawn and encoded as PNG
(`figure_to_png_bytes`). The baseline is the fixed cost of any figure of that size: an empty
`Figure` with the diagram's size and dpi, saved to PNG the same way. Reported: median and best of
`--repeats` alternating measurements, CPU time of this process (other jobs on the machine cannot
inflate it much) and wall time, and the ratio diagram / baseline, the number to compare across
machines. This replaces the unit test that asserted a CPU-time bound (issue 19: no speed-dependent
tests).

    .venv/bin/python benchmarks/bench_plots.py [--repeats 15] [--n 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    return (rng.uniform(size=n) < p).astype(np.int64), p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--n", type=int, default=20_000, help="predictions per diagram")
    args = ap.parse_args()

    from matplotlib.figure import Figure

    from dropout_risk.plots.png import close, figure_to_png_bytes
    from dropout_risk.plots.reliability import reliability_diagram

    y, p = _data(args.n)
    probe = reliability_diagram(y, p, title="timing")
    size, dpi = tuple(probe.get_size_inches()), probe.dpi
    figure_to_png_bytes(probe)  # warm-up: fonts, caches
    close(probe)

    def diagram() -> None:
        fig = reliability_diagram(y, p, title="timing")
        figure_to_png_bytes(fig)
        close(fig)

    def empty() -> None:
        fig = Figure(figsize=size, dpi=dpi)
        figure_to_png_bytes(fig)
        close(fig)

    empty()
    timings: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "wall": []} for name in ("empty", "diagram")}
    for _ in range(args.repeats):
        for name, fn in (("empty", empty), ("diagram", diagram)):
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            timings[name]["cpu"].append(time.process_time() - c0)
            timings[name]["wall"].append(time.perf_counter() - w0)

    med = statistics.median
    print(f"reliability diagram of {args.n} predictions to PNG, {size[0]:g} x {size[1]:g} in at dpi {dpi:g}; "
          f"{args.repeats} alternating repeats")
    print(f"{'':34s}{'CPU median':>11s}{'CPU best':>10s}{'wall median':>13s}")
    for name, label in (("empty", "empty Figure, same size (baseline)"), ("diagram", "reliability_diagram + PNG")):
        t = timings[name]
        print(f"{label:34s}{med(t['cpu']):10.3f}s{min(t['cpu']):9.3f}s{med(t['wall']):12.3f}s")
    ratio_cpu = med(timings["diagram"]["cpu"]) / med(timings["empty"]["cpu"])
    ratio_wall = med(timings["diagram"]["wall"]) / med(timings["empty"]["wall"])
    print(f"ratio diagram / baseline: {ratio_cpu:.2f}x (CPU median), {ratio_wall:.2f}x (wall median)")
    print(f"former unit-test bound: best CPU time < 0.3 s; here {min(timings['diagram']['cpu']):.3f} s")


if __name__ == "__main__":
    main()
