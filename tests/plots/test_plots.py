"""Reliability diagrams render to PNG, including diverged panels. (Their rendering time is a
benchmark, benchmarks/bench_plots.py, not a test.)"""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from dropout_risk.plots.png import close, figure_to_png_bytes, save_tiled_png
from dropout_risk.plots.reliability import (
    DIVERGED_TEXT,
    reliability_diagram,
    reliability_grid,
    reliability_pair,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    return (rng.uniform(size=n) < p).astype(np.int64), p


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_reliability_diagram_saves_png(tmp_path) -> None:
    y, p = _data()
    fig = reliability_diagram(y, p**0.5, title="val, epoch 3")
    assert isinstance(fig, Figure)
    ax_curve, ax_hist = fig.axes
    assert ax_curve.get_title() == "val, epoch 3"
    assert "ECE = " in ax_curve.get_legend().get_texts()[1].get_text()
    assert sum(patch.get_height() for patch in ax_hist.patches) == y.size  # histogram of all predictions
    out = tmp_path / "reliability.png"
    fig.savefig(out)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    assert figure_to_png_bytes(fig).startswith(PNG_MAGIC)
    close(fig)


def test_figures_stay_out_of_pyplot() -> None:
    before = plt.get_fignums()
    fig = reliability_diagram(*_data(500))
    assert plt.get_fignums() == before
    close(fig)


def test_reliability_grid_with_a_diverged_panel() -> None:
    y, p = _data(2_000)
    panels = [
        (y, p, "lr=1e-3"),
        (y, p**2, "lr=3e-3"),
        (y, np.full(y.size, np.nan), "lr=1e-1"),
        (y, p**0.3, "lr=1e-2"),
        (y, np.clip(1.5 * p, 0.0, 1.0), "lr=3e-2"),
    ]
    fig = reliability_grid(panels, ncols=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [t for _, _, t in panels]  # in the given order
    assert _texts(fig).count(DIVERGED_TEXT) == 1
    assert len(fig.axes) == 2 * len(panels)
    assert figure_to_png_bytes(fig).startswith(PNG_MAGIC)
    close(fig)


def test_reliability_pair_and_log_counts() -> None:
    y, p = _data(2_000)
    fig = reliability_pair(y, p**2, p, titles=("before", "after"))
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["before", "after"]
    assert figure_to_png_bytes(fig).startswith(PNG_MAGIC)
    close(fig)
    fig = reliability_diagram(y, p**3, log_counts=True)
    assert fig.axes[1].get_yscale() == "log"
    assert figure_to_png_bytes(fig).startswith(PNG_MAGIC)
    close(fig)


def test_two_line_title_gets_room_and_images_tile_in_order(tmp_path) -> None:
    y, p = _data(2_000)
    one = reliability_diagram(y, p, title="run · epoch 3")
    two = reliability_diagram(y, p, title="run · epoch 3\nlr 0.1 · converged · ECE 0.012")
    assert two.get_figheight() == pytest.approx(one.get_figheight() + 0.17)
    close(one)
    close(two)
    from PIL import Image

    a = Image.fromarray(np.zeros((4, 3, 3), np.uint8))
    b = Image.fromarray(np.full((2, 3, 3), 7, np.uint8))  # smaller: padded with white
    c = Image.fromarray(np.full((4, 3, 4), 9, np.uint8))  # RGBA: the alpha channel is dropped
    assert save_tiled_png([a, b, c], 2, tmp_path / "grid.png") == (6, 8)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))  # a PNG Pillow reads back exactly
    assert grid.shape == (8, 6, 3) and grid.dtype == np.uint8
    assert (grid[:4, :3] == 0).all() and (grid[:2, 3:] == 7).all() and (grid[2:4, 3:] == 255).all()
    assert (grid[4:, :3] == 9).all() and (grid[4:, 3:] == 255).all()  # the incomplete last row
    y, p = _data(500)
    fig = reliability_diagram(y, p, title="a real diagram")
    real = Image.open(io.BytesIO(figure_to_png_bytes(fig)))
    close(fig)
    pixels = np.asarray(real.convert("RGB"))
    assert save_tiled_png([real], 6, tmp_path / "one.png") == real.size
    assert np.array_equal(np.asarray(Image.open(tmp_path / "one.png")), pixels)
    with pytest.raises(ValueError, match="at least one"):
        save_tiled_png([], 2, tmp_path / "none.png")


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="at least one"):
        reliability_grid([])
    with pytest.raises(ValueError, match="same length"):
        reliability_diagram([0, 1], [0.5])
