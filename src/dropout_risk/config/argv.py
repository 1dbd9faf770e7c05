"""Command-line values Hydra must not parse: run ids (`123e4` would become a float), URIs and paths."""

from __future__ import annotations


def quote_values(args: list[str], keys: tuple[str, ...]) -> list[str]:
    """`key=value` arguments for `keys` with the value single-quoted (escaped), the rest unchanged."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in keys and value not in ("", "null") and value[0] not in "'\"":
            value = value.replace("\\", "\\\\").replace("'", "\\'")
            arg = f"{key}='{value}'"
        out.append(arg)
    return out
