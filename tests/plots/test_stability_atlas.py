"""The stability atlas: the numbers it draws (atlas_data), what is on each panel, and that it renders."""

from __future__ import annotations

import io
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from dropout_risk.plots.png import close, figure_to_png_bytes
from dropout_risk.plots.stability import PANELS, AtlasRun, atlas_data, stability_atlas

LRS = (0.01, 0.1, 1.0)
LAM0 = 8.0  # onset 2/lam0 = 0.25, inside the lrs' range


def _run(lr: float, seed: int, n: int = 30) -> AtlasRun:
    """lr 0.01 and 0.1 converge (final train 0.5/0.6/0.7 and 0.3/0.35/0.4, val + 0.1), seed 0 of lr 0.1
    catapults (peak at step 5); every seed of lr 1 diverges at step 10 + seed (loss 12, or NaN for seed 2)
    with NaN after it. Sharpness
    at steps 3, 6, ..., 27: 1 for the first six, then 5 + seed (lr 0.01), 19 + seed (lr 0.1), 50 (lr 1)."""
    steps = np.arange(1, n + 1, dtype=np.float64)
    losses = 1.0 / (1 + lr * steps)
    sharp_steps = np.arange(3, 30, 3)
    last = {0.01: 5.0 + seed, 0.1: 19.0 + seed, 1.0: 50.0}[lr]
    sharpness = np.r_[np.ones(6), np.full(3, last)]
    if lr == 1.0:
        at = 10 + seed
        losses[at - 1] = 12.0 if seed < 2 else np.nan  # seed 2: the loss became NaN at that step
        losses[at:] = np.nan
        return AtlasRun(lr, seed, "diverged", math.nan, math.nan, losses, sharp_steps, sharpness,
                        sharpness * 10, diverged_at_step=at)
    final = {0.01: 0.5, 0.1: 0.3}[lr] + seed * {0.01: 0.1, 0.1: 0.05}[lr]
    outcome, peak = ("catapult", 5) if (lr, seed) == (0.1, 0) else ("converged", None)
    if peak:
        losses[peak - 1] = 3.0
    return AtlasRun(lr, seed, outcome, final, final + 0.1, losses, sharp_steps, sharpness, sharpness * 10,
                    catapult_step=peak)


RUNS = [_run(lr, seed) for lr in LRS for seed in range(3)]


def _main_axes(fig: Figure) -> dict:
    return {ax.get_label(): ax for ax in fig.axes if ax.get_label() != "<colorbar>"}


def _texts(ax) -> str:
    legend = ax.get_legend()
    return " | ".join([t.get_text() for t in ax.texts] + ([t.get_text() for t in legend.get_texts()] if legend else []))


def _pixels(fig: Figure) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(figure_to_png_bytes(fig, dpi=40))).convert("RGB"), dtype=np.int16)


def test_atlas_data_counts_and_spreads_per_lr() -> None:
    data = atlas_data(RUNS, LAM0, "sgd")
    assert data.lr.tolist() == list(LRS)
    assert data.n_seeds.tolist() == [3, 3, 3]
    assert data.n_diverged.tolist() == [0, 0, 3] and data.n_catapult.tolist() == [0, 1, 0]
    assert data.n_pruned.tolist() == [0, 0, 0]
    np.testing.assert_allclose(data.train_loss_median[:2], [0.6, 0.35])
    np.testing.assert_allclose(data.train_loss_min[:2], [0.5, 0.3])
    np.testing.assert_allclose(data.train_loss_max[:2], [0.7, 0.4])
    np.testing.assert_allclose(data.val_loss_median[:2], [0.7, 0.45])
    assert data.iloc[2][["train_loss_median", "val_loss_min", "val_loss_max"]].isna().all()  # all diverged
    np.testing.assert_allclose(data.threshold, [200.0, 20.0, 2.0])  # 2/eta
    np.testing.assert_allclose(data.sharpness_median[:2], [6.0, 20.0])  # last third: 5/6/7 and 19/20/21
    assert math.isnan(data.sharpness_median[2])  # diverged runs are left out
    np.testing.assert_allclose(data.sharpness_over_threshold[:2], [0.03, 1.0])
    assert data.attrs == {"onset": 0.25, "optimizer": "sgd", "sharpness": "raw"}


def test_atlas_data_for_adam_uses_the_preconditioned_sharpness_and_38_over_eta() -> None:
    data = atlas_data(RUNS, LAM0, "AdamW", beta1=0.9)
    np.testing.assert_allclose(data.threshold, [3800.0, 380.0, 38.0])
    np.testing.assert_allclose(data.sharpness_median[:2], [60.0, 200.0])
    assert data.attrs["sharpness"] == "preconditioned"
    with pytest.raises(ValueError, match=r"beta1=1.0 must be in \[0, 1\)"):
        atlas_data(RUNS, LAM0, "adam", beta1=1.0)


def test_the_atlas_and_its_panels() -> None:
    before = plt.get_fignums()
    whole, panels = stability_atlas(RUNS, LAM0, "sgd")
    assert plt.get_fignums() == before  # never registered with pyplot
    axes = _main_axes(whole)
    assert list(axes) == list(PANELS) and list(panels) == list(PANELS)
    assert whole.get_size_inches()[0] == pytest.approx(15.0)
    for key, fig in panels.items():
        assert list(_main_axes(fig)) == [key]

    a = axes["loss_vs_lr"]
    assert a.get_xscale() == "log"
    onset = [ln for ln in a.lines if list(ln.get_xdata()) == [0.25, 0.25]]
    assert len(onset) == 1 and "plain-GD onset (Lewkowycz et al. 2020; Cohen et al. 2021)" in onset[0].get_label()
    text = _texts(a)
    assert "3/3" in text and "1/3" in text  # all of lr 1 diverged, one seed of lr 0.1 catapulted
    assert "reference only" not in text

    b = axes["loss_vs_step"]
    assert b.get_yscale() == "log"
    marks = {ln.get_marker(): ln for ln in b.lines if ln.get_linestyle() == "None"}
    assert list(marks["x"].get_xdata()) == [10, 11, 12]
    assert list(marks["x"].get_ydata()) == pytest.approx([12.0, 12.0, 1 / 12])  # NaN: the last finite loss
    assert list(marks["^"].get_xdata()) == [5] and list(marks["^"].get_ydata()) == [3.0]

    c = axes["sharpness_vs_step"]
    lines = {ln.get_gid(): ln for ln in c.lines if ln.get_gid()}
    for lr in LRS:
        threshold = lines[f"threshold lr={lr:g}"]
        assert threshold.get_linestyle() == "--" and list(threshold.get_ydata()) == [2 / lr, 2 / lr]
        for seed in range(3):
            assert to_rgba(lines[f"sharpness lr={lr:g} seed={seed}"].get_color()) == to_rgba(threshold.get_color())
    assert to_rgba(lines["threshold lr=0.01"].get_color()) != to_rgba(lines["threshold lr=1"].get_color())
    assert "2/η: edge of stability, Cohen et al. 2021" in _texts(c)
    for fig in (whole, *panels.values()):
        close(fig)


def test_adam_atlas_labels_the_onset_a_reference_and_draws_the_preconditioned_sharpness() -> None:
    whole, panels = stability_atlas(RUNS, LAM0, "adamw")
    axes = _main_axes(whole)
    assert "plain-GD reference only: adamw is adaptive" in _texts(axes["loss_vs_lr"])
    c = axes["sharpness_vs_step"]
    assert "38/η for β1 = 0.9: adaptive edge of stability" in _texts(c)
    lines = {ln.get_gid(): ln for ln in c.lines if ln.get_gid()}
    np.testing.assert_allclose(lines["sharpness lr=0.1 seed=1"].get_ydata(), RUNS[4].preconditioned)
    assert list(lines["threshold lr=0.1"].get_ydata()) == pytest.approx([380.0, 380.0])
    for fig in (whole, *panels.values()):
        close(fig)


def test_rendered_png_is_not_blank_and_depends_on_the_runs() -> None:
    first, panels = stability_atlas(RUNS, LAM0, "sgd")
    other, other_panels = stability_atlas([_run(0.1, s) for s in range(3)], None, "sgd")
    a, b = _pixels(first), _pixels(other)
    assert a.shape == b.shape == (200, 600, 3)  # 15 x 5 in at 40 dpi
    assert (a.min(axis=2) < 200).mean() > 0.03  # ink, not a white page
    assert np.abs(a - b).mean() > 1.0
    for fig in (first, other, *panels.values(), *other_panels.values()):
        close(fig)


def test_each_panel_renders_on_its_own() -> None:
    whole, panels = stability_atlas(RUNS, LAM0, "adamw")
    for key, fig in panels.items():
        pixels = _pixels(fig)
        assert pixels.shape == (200, 240, 3), key  # 6 x 5 in at 40 dpi
        assert (pixels.min(axis=2) < 200).mean() > 0.03, key
    for fig in (whole, *panels.values()):
        close(fig)


NO_SHARPNESS = AtlasRun(0.05, 0, "pruned", 0.5, 0.6, np.linspace(1.0, 0.5, 20))


@pytest.mark.parametrize(
    ("runs", "lam0", "says"),
    [
        pytest.param([RUNS[3]], LAM0, {}, id="single-run"),
        pytest.param(RUNS[6:], LAM0, {"loss_vs_lr": "every run diverged"}, id="all-diverged"),
        pytest.param(RUNS, math.nan, {"loss_vs_lr": "no onset line (λ_max(0) = nan"}, id="lam0-nan"),
        pytest.param(RUNS, -1.0, {"loss_vs_lr": "no onset line (λ_max(0) = -1.0"}, id="lam0-negative"),
        pytest.param(RUNS, None, {"loss_vs_lr": "no onset line (not estimated)"}, id="lam0-none"),
        pytest.param([NO_SHARPNESS], 0.0, {"sharpness_vs_step": "no sharpness recorded"}, id="no-sharpness"),
        pytest.param([], LAM0, {"loss_vs_lr": "no runs", "loss_vs_step": "no per-step"}, id="no-runs"),
    ],
)
def test_edge_cases_render_and_say_what_is_missing(runs: list[AtlasRun], lam0, says: dict) -> None:
    whole, panels = stability_atlas(runs, lam0, "sgd")
    axes = _main_axes(whole)
    assert len(axes) == 3
    for key, text in says.items():
        assert text in _texts(axes[key])
    assert len(atlas_data(runs, lam0, "sgd")) == len({r.lr for r in runs})
    assert figure_to_png_bytes(whole, dpi=30).startswith(b"\x89PNG")
    for fig in (whole, *panels.values()):
        close(fig)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr=0.0 must be a positive number"),
        ({"lr": math.nan}, "lr=nan must be a positive number"),
        ({"outcome": "failed"}, "outcome='failed' is unknown"),
        ({"sharpness_steps": [1, 2], "sharpness": [1.0]}, "sharpness has 1 values but sharpness_steps has 2"),
    ],
)
def test_atlas_run_rejects_what_cannot_be_drawn(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        AtlasRun(**{"lr": 0.1, "seed": 0, "outcome": "converged", **kwargs})
