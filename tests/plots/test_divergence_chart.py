"""The divergence chart renders for every shape a sweep summary can take; observed_boundary finds the edge."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from dropout_risk.analysis.boundary import divergence_interval, observed_boundary, per_lr
from dropout_risk.format import sig
from dropout_risk.plots.divergence import BAND_LABEL, divergence_chart
from dropout_risk.plots.png import close, figure_to_png_bytes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["trial", "phase", "lr", "outcome", "diverged_at_step", "train_loss", "val_loss", "auroc", "ece",
           "brier", "duration_s"]


def _row(trial: int, lr: float, outcome: str, phase: str = "scan", step: float = np.nan) -> dict:
    ok = outcome in ("converged", "pruned")
    loss = 0.35 + 0.6 * np.exp(-3 * lr) if ok else np.nan
    return {
        "trial": trial,
        "phase": phase,
        "lr": lr,
        "outcome": outcome,
        "diverged_at_step": step,
        "train_loss": loss,
        "val_loss": loss + 0.02 if ok else np.nan,
        "auroc": 0.85 - 0.2 * np.exp(-3 * lr) if ok else np.nan,
        "ece": 0.02 + 0.2 * np.exp(-5 * lr) if ok else np.nan,
        "brier": 0.15 if ok else np.nan,
        "duration_s": 1.5,
    }


def mixed_summary() -> pd.DataFrame:
    """A 12-lr scan from 1e-3 to 10 that diverges from 1.87 on, one failed trial, plus refine trials."""
    rows = []
    for i, lr in enumerate(np.logspace(-3, 1, 12)):
        outcome = "converged" if lr < 1.5 else "diverged"
        rows.append(_row(i, lr, outcome, step=3.0 + i if outcome == "diverged" else np.nan))
    rows[3] = _row(3, rows[3]["lr"], "failed")
    rows.append(_row(12, 0.3, "converged", phase="refine"))
    rows.append(_row(13, 0.5, "pruned", phase="refine"))
    rows.append(_row(14, 1.2, "converged", phase="refine"))
    rows.append(_row(15, 0.9, "diverged", phase="refine", step=40.0))  # refine divergence: not the boundary
    return pd.DataFrame(rows, columns=COLUMNS)


def _texts(fig: Figure) -> list[str]:
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [t.get_text() for t in ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            out += [t.get_text() for t in legend.get_texts()]
    return out


def _render(fig: Figure) -> bytes:
    data = figure_to_png_bytes(fig)
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert fig.get_size_inches() == pytest.approx((9.0, 7.0)) and fig.dpi == 100
    return data


def test_mixed_summary() -> None:
    summary = mixed_summary()
    boundary = observed_boundary(summary)
    before = plt.get_fignums()
    fig = divergence_chart(summary, 0.9, "adamw", boundary)
    assert plt.get_fignums() == before  # never registered with pyplot
    _render(fig)
    texts = " | ".join(_texts(fig))
    assert "adamw" in texts  # the title names the optimiser
    assert "16 trials: 10 converged, 4 diverged, 1 pruned, 1 failed" in texts
    assert "2/λ_max = 0.9" in texts and "plain-GD stability threshold" in texts and "AdamW" in texts
    assert "step 12" in texts and "step 40" in texts  # each divergence labelled with its step
    assert "observed boundary" in texts
    ax_loss, ax_cal = fig.axes
    assert ax_loss.get_xscale() == "log" and ax_loss.get_yscale() == "log"
    assert ax_cal.get_ylim()[0] == 0.0
    lo, hi = ax_loss.get_xlim()
    assert lo < 1e-3 and hi > 10
    close(fig)


def test_all_diverged() -> None:
    summary = mixed_summary()
    summary["outcome"] = "diverged"
    boundary = observed_boundary(summary)
    assert boundary == (None, pytest.approx(1e-3))
    fig = divergence_chart(summary, 0.01, "sgd", boundary)
    _render(fig)
    texts = " | ".join(_texts(fig))
    assert "no trial converged" in texts and "smallest diverged lr" in texts
    close(fig)


def test_none_diverged() -> None:
    summary = mixed_summary()
    summary = summary[summary["outcome"] != "diverged"]
    boundary = observed_boundary(summary)
    assert boundary == (pytest.approx(summary["lr"][summary["phase"] == "scan"].max()), None)
    fig = divergence_chart(summary, 0.9, "sgd", boundary)
    _render(fig)
    texts = " | ".join(_texts(fig))
    assert "no trial diverged" in texts and "largest converged lr" in texts
    close(fig)


@pytest.mark.parametrize("threshold", [None, float("nan"), 0.0])
def test_threshold_not_available(threshold) -> None:
    fig = divergence_chart(mixed_summary(), threshold, "adamw")
    _render(fig)
    assert any(t.startswith("2/λ_max: ") for t in _texts(fig))
    close(fig)


@pytest.mark.parametrize(("threshold", "side"), [(5e3, "right"), (1e-7, "left")])
def test_threshold_far_outside_the_range_is_an_arrow_at_the_edge(threshold: float, side: str) -> None:
    summary = mixed_summary()
    fig = divergence_chart(summary, threshold, "sgd", observed_boundary(summary))
    _render(fig)
    ax_loss = fig.axes[0]
    lo, hi = ax_loss.get_xlim()
    assert lo > 1e-4 and hi < 100  # the axis was not stretched over decades of nothing
    texts = " | ".join(_texts(fig))
    assert f"off the chart,\n{side}" in texts
    arrows = [t for t in ax_loss.texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == 1 and "2/λ_max" in arrows[0].get_text()
    close(fig)


def test_threshold_just_outside_the_range_widens_the_axis() -> None:
    fig = divergence_chart(mixed_summary(), 30.0, "sgd")
    _render(fig)
    assert fig.axes[0].get_xlim()[1] > 30.0
    assert not any("off the chart" in t for t in _texts(fig))
    close(fig)


def test_single_trial_and_nan_metrics() -> None:
    single = pd.DataFrame([_row(0, 0.01, "converged")], columns=COLUMNS)
    fig = divergence_chart(single, 0.5, "sgd", observed_boundary(single))
    _render(fig)
    assert "1 trial: 1 converged, 0 diverged, 0 pruned, 0 failed" in _texts(fig)
    close(fig)

    summary = mixed_summary()
    summary.loc[[1, 5], ["val_loss", "ece"]] = np.nan
    summary.loc[summary["outcome"] == "converged", "auroc"] = np.nan
    fig = divergence_chart(summary, 0.9, "sgd", observed_boundary(summary))
    _render(fig)
    close(fig)


def test_minimal_columns_and_empty_summary() -> None:
    minimal = pd.DataFrame({"lr": [1e-3, 1e-2, 1e-1, 1.0], "outcome": ["converged"] * 3 + ["diverged"]})
    fig = divergence_chart(minimal, 0.2, "sgd", observed_boundary(minimal))
    _render(fig)
    close(fig)
    fig = divergence_chart(pd.DataFrame(columns=COLUMNS), None, "sgd")
    _render(fig)
    assert "no trials" in _texts(fig)
    close(fig)


def test_bad_summaries_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="lacks column"):
        divergence_chart(pd.DataFrame({"lr": [0.1]}), None, "sgd")
    with pytest.raises(ValueError, match="positive"):
        divergence_chart(pd.DataFrame({"lr": [0.0], "outcome": ["converged"]}), None, "sgd")
    with pytest.raises(ValueError, match="unknown outcome"):
        divergence_chart(pd.DataFrame({"lr": [0.1], "outcome": ["exploded"]}), None, "sgd")


def test_observed_boundary_on_a_hand_made_summary() -> None:
    summary = pd.DataFrame(
        {
            "phase": ["scan"] * 7 + ["refine", "refine"],
            "lr": [0.001, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 0.2, 0.5],
            "outcome": ["converged", "converged", "converged", "pruned", "diverged", "converged", "diverged",
                        "diverged", "converged"],
        }
    )
    # pruned 0.3 is not evidence of convergence; converged 3.0 lies above the first divergence
    # (a noisy scan); refine rows do not count (they may vary other hyperparameters)
    assert observed_boundary(summary) == (0.1, 1.0)
    assert observed_boundary(summary.iloc[:3]) == (0.1, None)
    assert observed_boundary(summary.iloc[4:5]) == (None, 1.0)
    assert observed_boundary(summary.iloc[:0]) == (None, None)
    no_phase = summary.drop(columns="phase")  # without a phase column every row counts
    assert observed_boundary(no_phase) == (0.1, 0.2)
    with pytest.raises(ValueError, match="outcome"):
        observed_boundary(summary.drop(columns="outcome"))


def test_boundary_is_drawn_as_given() -> None:
    fig = divergence_chart(mixed_summary(), None, "sgd", boundary=(0.8, 1.9))
    _render(fig)
    texts = " | ".join(_texts(fig))
    assert "converged\nat 0.8, diverged at 1.9" in texts
    close(fig)


def test_baselines_are_horizontal_reference_lines_inside_the_axis() -> None:
    """A baseline's val log loss far above the trials' losses still shows (the axis widens)."""
    fig = divergence_chart(mixed_summary(), 2.5, "SGD", references={"logreg": 0.3, "hgb": 3.0, "bad": float("nan")})
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines() if "baseline" in ln.get_label()}
    assert set(lines) == {"logreg val log loss (baseline)", "hgb val log loss (baseline)"}
    for label, value in (("logreg", 0.3), ("hgb", 3.0)):
        ys = lines[f"{label} val log loss (baseline)"].get_ydata()
        assert list(ys) == [value, value]
        lo, hi = ax.get_ylim()
        assert lo < value < hi
    assert "logreg val log loss (baseline)" in _texts(fig)
    _render(fig)
    close(fig)


def seeded_summary() -> pd.DataFrame:
    """8 lrs x 3 seeds (1e-3 .. 3.16): no divergence up to 0.0316, then 1/3, 2/3, 2/2 (a failed seed), 3/3;
    one refine trial."""
    diverging = [0, 0, 0, 0, 1, 2, 2, 3]  # seeds that diverge at each lr
    rows = []
    for i, lr in enumerate(np.logspace(-3, 0.5, 8)):
        for seed in range(3):
            outcome = "diverged" if seed < diverging[i] else "converged"
            row = _row(3 * i + seed, lr, outcome, step=10.0 + seed if outcome == "diverged" else np.nan)
            if outcome == "converged":
                row.update(train_loss=row["train_loss"] * (1 + 0.05 * seed), val_loss=row["val_loss"] * (1 + 0.1 * seed))
            rows.append({**row, "seed": seed})
    rows[20] = {**_row(20, rows[20]["lr"], "failed"), "seed": 2}  # lr 1: 2 diverged of 2 finished
    rows.append({**_row(24, 0.05, "converged", phase="refine"), "seed": 0})
    return pd.DataFrame(rows, columns=[*COLUMNS, "seed"])


def test_seeds_are_drawn_as_medians_with_ranges_and_the_interval_band() -> None:
    summary = seeded_summary()
    lo, hi = divergence_interval(summary)
    fig = divergence_chart(summary, 0.9, "adamw", observed_boundary(summary))
    data = _render(fig)
    assert (lo, hi) == pytest.approx((10**-1.5, 1.0))
    ax_loss, ax_cal = fig.axes
    legend = [" ".join(t.split()) for t in _texts(fig)]
    assert "divergence sets in (0 → all seeds diverge)" in legend and " ".join(BAND_LABEL.split()) in legend
    assert f"no seed diverged at lr ≤ {sig(lo)}" in legend and f"every seed diverged at lr ≥ {sig(hi)}" in legend
    assert not any("observed boundary" in t for t in legend)  # the single-seed band is replaced, not doubled
    assert "25 trials: 16 converged, 8 diverged, 0 pruned, 1 failed (8 scanned lrs × up to 3 seeds)" in legend
    assert [t for t in legend if "/" in t and len(t) == 3] == ["1/3", "2/3", "2/2", "3/3"]  # diverged/finished
    lines = {ln.get_label(): ln for ln in ax_loss.get_lines()}
    assert list(lines[f"no seed diverged at lr ≤ {sig(lo)}"].get_xdata()) == [lo, lo]
    assert list(lines[f"every seed diverged at lr ≥ {sig(hi)}"].get_xdata()) == [hi, hi]
    # one errorbar per series: the median line through every lr with a non-diverged seed, bars min-max
    per = per_lr(summary)
    medians = {c.get_label(): c for c in ax_loss.containers}
    val = medians["val log loss: median of seeds\n(bar: min–max over seeds)"]
    assert list(val.lines[0].get_ydata()) == pytest.approx(per.val_loss_median.dropna().tolist())
    segments = val.lines[2][0].get_segments()
    assert [s[0][1] for s in segments] == pytest.approx(per.val_loss_min.dropna().tolist())
    assert [s[1][1] for s in segments] == pytest.approx(per.val_loss_max.dropna().tolist())
    assert {c.get_label().split(":")[0] for c in ax_cal.containers} == {"ECE", "AUROC"}
    assert ax_loss.get_legend().get_texts()[0].get_text().startswith("train loss: median of seeds")
    close(fig)

    with_band = np.asarray(plt.imread(io.BytesIO(data)))
    assert with_band.std() > 0.05  # not blank


@pytest.mark.parametrize("kind", ["all converged", "all diverged", "diverged at the smallest lr"])
def test_seeded_chart_edges(kind: str) -> None:
    summary = seeded_summary()
    scan = summary.phase == "scan"
    if kind == "all converged":
        summary.loc[scan, "outcome"] = "converged"
    elif kind == "all diverged":
        summary["outcome"] = "diverged"  # the refine trial too: no losses at all
    else:
        summary.loc[0, "outcome"] = "diverged"
    fig = divergence_chart(summary, None, "sgd")
    _render(fig)
    texts = " | ".join(_texts(fig))
    expected = {"all converged": ["no trial diverged", "no seed diverged at lr ≤ 3.16"],
                "all diverged": ["a seed diverged at the smallest lr", "every seed diverged at lr ≥ 0.001",
                                 "no trial converged"],
                "diverged at the smallest lr": ["a seed diverged at the smallest lr", "every seed diverged at lr ≥ 1"]}
    assert all(e in texts for e in expected[kind]) and "scanned lrs × up to 3 seeds" in texts
    assert "divergence sets in" not in texts  # one end only: a line, no band
    close(fig)


def test_one_seed_per_lr_looks_as_without_seeds() -> None:
    """A seed column with one seed per lr (or the same seed everywhere) changes nothing in the chart."""
    summary = mixed_summary()
    boundary = observed_boundary(summary)
    plain = figure_to_png_bytes(divergence_chart(summary, 0.9, "adamw", boundary, {"logreg": 0.4}))
    for seeds in ([0] * len(summary), list(range(len(summary))), [None] * len(summary)):
        seeded = summary.assign(seed=pd.array(seeds, dtype="Int64"))
        fig = divergence_chart(seeded, 0.9, "adamw", boundary, {"logreg": 0.4})
        assert figure_to_png_bytes(fig) == plain
        assert "observed boundary" in " | ".join(_texts(fig)) and not fig.axes[0].containers
        close(fig)
