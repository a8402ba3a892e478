"""Tables in the paper's layout: one row per model / method, columns ``clean, 1, ..., 7``."""

from __future__ import annotations

import math
from typing import Sequence


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def text_table(title: str, columns: Sequence[str], rows: Sequence[tuple[str, Sequence[float | None]]], digits: int = 3) -> str:
    """A plain-text table for the terminal."""
    head = ["", *columns]
    body = [[name, *(fmt(v, digits) for v in values)] for name, values in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    out = [title, line(head), line(["-" * w for w in widths])] + [line(r) for r in body]
    return "\n".join(out)


def markdown_table(columns: Sequence[str], rows: Sequence[tuple[str, Sequence[float | None]]], first: str = "", digits: int = 3) -> str:
    lines = ["| " + " | ".join([first, *columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, values in rows:
        lines.append("| " + " | ".join([name, *(fmt(v, digits) for v in values)]) + " |")
    return "\n".join(lines)


def sweep_row(
    records: Sequence[dict], steps: Sequence[int], metric: str = "mIoU", attack: str = "bim", source: str = "self", eps: float | None = None
) -> list[float | None]:
    """Values for the columns ``clean, steps...`` from evaluation records of one model (at ``eps``
    when given; else the first record of each step count)."""
    def pick(attack_name: str, n: int) -> float | None:
        for r in records:
            if r["attack"] == attack_name and r["steps"] == n and (attack_name == "clean" or (r["source"] == source and (eps is None or r["eps"] == eps))):
                return r[metric]
        return None

    return [pick("clean", 0), *(pick(attack, n) for n in steps)]


def paper_markdown(
    columns: Sequence[str],
    rows: Sequence[tuple[str, Sequence[float | None]]],
    digits: int = 3,
    bold_rows: Sequence[str] = (),
) -> str:
    """A Markdown table in the paper's layout, header ``| | clean | 1 | 2 | ... |``.

    Among the rows named in ``bold_rows`` (the "Mean" rows), the highest value of each column is
    set in bold, as the paper marks the best average performance. Missing values print as ``-``.
    """
    best: list[float | None] = []
    chosen = [values for name, values in rows if name in set(bold_rows)]
    for i in range(len(columns)):
        vals = [v[i] for v in chosen if i < len(v) and v[i] is not None and not math.isnan(v[i])]
        best.append(max(vals) if len(vals) > 1 else None)

    def cell(name: str, i: int, value: float | None) -> str:
        text = fmt(value, digits)
        if name in bold_rows and best[i] is not None and value is not None and fmt(value, digits) == fmt(best[i], digits):
            return f"**{text}**"
        return text

    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, values in rows:
        lines.append("| " + " | ".join([name, *(cell(name, i, v) for i, v in enumerate(values))]) + " |")
    return "\n".join(lines)
