"""Lines for a terminal: every line a pipeline prints fits WIDTH (100) columns.

`fit(text)` wraps each line longer than that at spaces, continuing with a hanging indent (a
no-break space, NBSP, holds words together and prints as a space);
`fit_command(label, command)` wraps a shell command with ` \\` at each break, so that its lines,
copied together, still run. A single word longer than a line (a long path or URL) is never cut:
a cut one could not be pasted. No heavy imports: the pipelines import this before torch.
"""

from __future__ import annotations

import shlex
import textwrap

NBSP = "\xa0"  # in fit()'s text: a space it never breaks at
WIDTH = 100
INDENT = "    "  # the hanging indent of a wrapped line's continuation


def fit(text: str, width: int = WIDTH, indent: str = INDENT) -> str:
    """`text` with every line longer than `width` wrapped at spaces (not at NBSP, which becomes a
    space); a continuation line starts with the line's own leading spaces plus `indent`."""
    out: list[str] = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        lead = line[: len(line) - len(line.lstrip(" "))]
        out.extend(textwrap.wrap(line, width, subsequent_indent=lead + indent, break_long_words=False,
                                 break_on_hyphens=False) or [line])
    return "\n".join(out).replace(NBSP, " ")


def fit_command(label: str, command: str, width: int = WIDTH, indent: str = INDENT) -> str:
    """`label` and `command` on one line when they fit; else the command broken between its
    arguments (an option stays with its value) with ` \\` at the end of every line but the
    last. Text that is not a plain command (it would not read back the same) is fit() instead."""
    line = f"{label} {command}" if label else command
    if len(line) <= width:
        return line
    try:
        words = shlex.split(command)
    except ValueError:
        return fit(line, width, indent)
    if not words or shlex.join(words) != command:
        return fit(line, width, indent)
    quoted = [shlex.quote(w) for w in words]
    units: list[str] = []  # "--option value" stays together where it fits on a line
    for word in quoted:
        if (units and units[-1].startswith("-") and " " not in units[-1] and not word.startswith("-")
                and len(indent) + len(units[-1]) + 1 + len(word) + 2 <= width):
            units[-1] += f" {word}"
        else:
            units.append(word)
    head = f"{label} " if label else ""
    alone = bool(label) and len(head) + len(units[0]) + 2 > width  # the label alone, the command below it
    lines = [indent + units[0] if alone else head + units[0]]
    for unit in units[1:]:
        if len(lines[-1]) + 1 + len(unit) + 2 <= width:  # room for " \" after it
            lines[-1] += f" {unit}"
        else:
            lines.append(indent + unit)
    return (f"{label}\n" if alone else "") + " \\\n".join(lines)
