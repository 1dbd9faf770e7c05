"""Numbers as text, the same way everywhere the project prints or titles them."""

from __future__ import annotations

import math


def fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"
