"""Figures to PNG: bytes, tiled grids written a row at a time, closing."""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

if "matplotlib.pyplot" not in sys.modules:  # headless by default; keep a backend a notebook already chose
    matplotlib.use("Agg")


def save_tiled_png(images: Sequence, ncols: int, path) -> tuple[int, int]:
    """Write PIL images side by side as one PNG at ``path``: ``ncols`` per row, in the given order,
    each cell as large as the largest image (smaller ones and an incomplete last row padded with
    white). Returns the PNG's (width, height).

    Written one row of cells at a time, each image closed once drawn: memory holds one row (and
    the images as given, e.g. opened lazily with ``PIL.Image.open``), however many rows there are.
    Pillow can only encode a whole image in memory (a 48-diagram sweep grid: 33 MB), so this
    writes the PNG chunks itself: IHDR, zlib-compressed scanlines in IDAT chunks, IEND."""
    import struct
    import zlib

    from PIL import Image

    if len(images) == 0:
        raise ValueError("save_tiled_png needs at least one image")
    if ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    ncols = min(ncols, len(images))
    nrows = math.ceil(len(images) / ncols)
    w = max(im.size[0] for im in images)
    h = max(im.size[1] for im in images)
    width, height = ncols * w, nrows * h

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(6)
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))  # 8-bit RGB
        for r in range(nrows):
            band = Image.new("RGB", (width, h), "white")
            for c, im in enumerate(images[r * ncols : (r + 1) * ncols]):
                band.paste(im.convert("RGB"), (c * w, 0))
                im.close()
            rows = np.asarray(band)
            lines = np.concatenate([np.zeros((h, 1), np.uint8), rows.reshape(h, -1)], axis=1)  # filter 0
            out.write(chunk(b"IDAT", packer.compress(lines.tobytes())))
        out.write(chunk(b"IDAT", packer.flush()))
        out.write(chunk(b"IEND", b""))
    return width, height


def figure_to_png_bytes(fig: Figure, dpi: int | None = None) -> bytes:
    """The figure rendered as PNG bytes (at the figure's own dpi unless ``dpi`` is given)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi if dpi is not None else fig.dpi)
    return buffer.getvalue()


def close(fig: Figure) -> None:
    """Release a figure: remove it from pyplot if pyplot made it, and drop its artists."""
    plt.close(fig)
    fig.clear()
