"""One reliability diagram written as the UI's image-grid files, in a process of its own
(training/diagrams.py): this module imports only numpy, matplotlib and PIL, so that the drawing
process starts in ~1 s instead of loading torch and Lightning."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def draw_grid_files(y: np.ndarray, p: np.ndarray, title: str, key: str, step: int, folder: str) -> str:
    """In the drawing process: the diagram's PNG and full-size WebP in `folder`, named as
    MLflow's log_image names them (so the UI's image grid finds them at `step`)."""
    import time

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    from dropout_risk.plots.png import close
    from dropout_risk.plots.reliability import reliability_diagram
    from dropout_risk.tracking.names import grid_image_stem

    fig = reliability_diagram(y, p, title=title)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    dpi = fig.dpi
    close(fig)
    stem = grid_image_stem(key, step, int(time.time() * 1000))
    image.save(Path(folder) / f"{stem}.png", dpi=(dpi, dpi))
    image.save(Path(folder) / f"{stem}+compressed.webp", quality=90)
    return stem


def warm() -> None:
    """Import the drawing modules in the new process while the first epoch trains."""
    import PIL.Image  # noqa: F401

    import dropout_risk.plots.reliability  # noqa: F401
