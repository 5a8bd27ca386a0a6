"""Numbers and columns as text: what the terminal tables, reports and experiment summaries share."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["format_cell", "format_columns"]


def format_cell(value: object) -> str:
    """A number to 4 significant digits, integers as they are, NaN as ``-``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        return "-"
    if number.is_integer() and abs(number) < 1e6:
        return str(int(number))
    return f"{number:.4g}"


def format_columns(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns with a rule under the header."""
    cells = [list(header)] + [[format_cell(value) for value in row] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
