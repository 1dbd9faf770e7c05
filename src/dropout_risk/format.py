"""Numbers as text, one way for the whole project (printed tables, chart labels, titles, explanations)."""

from __future__ import annotations

import math


def fmt(value: float | None, digits: int = 4, *, general: bool = False, missing: str = "nan") -> str:
    """`digits` decimals, switching to `digits` significant digits from 1,000 up so that large
    values stay short; with `general`, always `digits` significant digits. None and NaN are
    `missing`; infinities 'inf' and '-inf'."""
    if value is None or math.isnan(value):
        return missing
    return f"{value:.{digits}g}" if general or abs(value) >= 1000 else f"{value:.{digits}f}"


def sig(value: float | None, digits: int = 3) -> str:
    """`digits` significant digits (chart labels, explanations): fmt(value, digits, general=True)."""
    return fmt(value, digits, general=True)
