"""How measured numbers and the paper's are written into the generated markdown tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

HEADER = {"PGD": "PGD-10", "CW": "CW-L2", "NIFGSM": "NI-FGSM", "Worst case": "L∞ worst case"}


def signed(value: float, digits: int) -> str:
    text = f"{abs(value):.{digits}f}"
    if float(text) == 0:
        return text
    return ("+" if value > 0 else "−") + text


def measured_text(cell: Any, digits: int, ran: bool = True) -> str:
    """Mean (± std over seeds); 'not run' when the row has no evaluated run, '-' when it lacks this attack."""
    if cell.mean is None:
        return "-" if ran else "not run"
    if cell.std is None:
        return f"{cell.mean:.{digits}f}"
    return f"{cell.mean:.{digits}f} ± {cell.std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def differences(rows: Sequence[dict[str, Any]], labels: Sequence[str], which: str) -> list[str]:
    """With IB-RAR minus without, per column ('-' where either side is missing)."""
    cells = []
    for label in labels:
        base, ib = (getattr(r[label], which) for r in rows)
        cells.append("-" if base is None or ib is None else signed(ib - base, 2))
    return cells


def cell_texts(cells: dict[str, Any], columns: Sequence[str], ran: bool, digits: int = 1) -> list[str]:
    return [measured_text(cells[c], digits, ran) for c in columns]


def paper_rows(rows: Sequence[Any], columns: Sequence[str], label: Callable[[Any], str]) -> list[list[str]]:
    """The paper's value per column of each row (a row per distinct label), when the paper gives any."""
    out: dict[str, list[str]] = {}
    for row in rows:
        values = [row.cells[c].paper for c in columns]
        if any(v is not None for v in values):
            out.setdefault(label(row), ["-" if v is None else f"{v:.2f}" for v in values])
    return [[name, *values] for name, values in out.items()]


def percent(fraction: Any) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}"
