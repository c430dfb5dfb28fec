"""A measured table as markdown lines: the one layout that results.md and the generated docs both show (ours, the
differences of the declared pairs, the paper's rows), so that a table is never drawn twice."""

from __future__ import annotations

from collections.abc import Sequence

from ibrar.experiments.measure import Cell, MeasuredRow, MeasuredTable
from ibrar.rounding import fixed, signed


def paper_text(value: float | None) -> str:
    return "-" if value is None else fixed(value, 2)


def measured_text(cell: Cell, digits: int, ran: bool = True) -> str:
    """Mean (± std over seeds); 'not run' when the row has no evaluated run, '-' when it lacks this number."""
    if cell.mean is None:
        return "-" if ran else "not run"
    if cell.std is None:
        return fixed(cell.mean, digits)
    return f"{fixed(cell.mean, digits)} ± {fixed(cell.std, digits)}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def has_paper(table: MeasuredTable) -> bool:
    """Whether the paper gives any number of this table."""
    return any(_paper_gives(table, column) for column in table.columns)


def render_table(table: MeasuredTable) -> list[str]:
    """The markdown lines of a measured table, in the layout its declaration asks for: our rows (the paper's value
    beside each of ours where `paper_layout` is "columns"), a difference row per declared pair, then the paper's
    rows and their differences where it is "rows"."""
    if table.spec.sides:
        return _side_by_side(table)
    spec = table.spec
    beside = [c for c in table.columns if spec.paper_layout == "columns" and _paper_gives(table, c)]
    header = [spec.row_header, *(["seeds"] if spec.seeds_column else [])]
    for column, shown in zip(table.columns, table.headers, strict=True):
        header += [shown, f"paper {shown}"] if column in beside else [shown]
    header += [spec.gain.header] if spec.gain else []
    suffix = f" (ours, {table.scale})" if spec.mark_ours else ""
    body = []
    for row in table.rows:
        line = [f"{row.label}{suffix}", *([_seeds(row)] if spec.seeds_column else [])]
        for column in table.columns:
            line.append(measured_text(row.cells[column], spec.digits, row.runs > 0))
            line += [paper_text(row.cells[column].paper)] if column in beside else []
        body.append([*line, *_gain(table, row)])
    # the cells of the rows that are not runs: a difference, or the paper's values, per column
    def other(label: str, cells: Sequence[str]) -> list[str]:
        return [label, *(["-"] if spec.seeds_column else []), *cells, *(["-"] if spec.gain else [])]

    body += [other(_pair_label(table, pair), _differences(table, pair, "mean")) for pair in spec.pairs]
    if spec.paper_layout == "rows":
        # a paper row shared by several of ours (one per setting) goes where its last one sits, so that a row only
        # some settings have (the scale study's row (5)) still takes its place among the paper's rows
        shown_rows: dict[str, list[str]] = {}
        for row in reversed(table.rows):
            values = [row.cells[c].paper for c in table.columns]
            if any(v is not None for v in values):
                shown_rows.setdefault(row.spec.paper_label or f"{row.label} (paper)", [paper_text(v) for v in values])
        body += [other(label, values) for label, values in reversed(shown_rows.items())]
        body += [other(f"{_pair_label(table, pair)} (paper)", _differences(table, pair, "paper"))
                 for pair in spec.pairs if any(_paper_gives(table, c, pair) for c in table.columns)]
    return markdown_table(header, body)


def _paper_gives(table: MeasuredTable, column: str, groups: Sequence[str] | None = None) -> bool:
    """Whether the paper gives a value of `column` for any row (of `groups`)."""
    return any(row.cells[column].paper is not None for row in table.rows if groups is None or row.group in groups)


def _seeds(row: MeasuredRow) -> str:
    """How many of the row's seeds were evaluated: '2', or '1 of 2' where some are missing."""
    return str(row.runs) if row.runs == row.planned else f"{row.runs} of {row.planned}"


def _gain(table: MeasuredTable, row: MeasuredRow) -> list[str]:
    gain = table.spec.gain
    if gain is None:
        return []
    value, reference = row.cells[gain.column].mean, table.row(gain.reference).cells[gain.column].mean
    if row.group == gain.reference or value is None or reference is None:
        return ["-"]
    return [signed(value - reference, table.spec.digits)]


def _pair_label(table: MeasuredTable, pair: tuple[str, str]) -> str:
    """'difference' for a table of one pair; with several, which pair it is."""
    if len(table.spec.pairs) == 1:
        return "difference"
    return f"difference, {table.row(pair[1]).label} − {table.row(pair[0]).label}"


def _differences(table: MeasuredTable, pair: tuple[str, str], which: str) -> list[str]:
    """The pair's second row minus its first, per column ('-' where either side is missing)."""
    base, other = (table.row(group).cells for group in pair)
    cells = []
    for column in table.columns:
        a, b = getattr(base[column], which), getattr(other[column], which)
        cells.append("-" if a is None or b is None else signed(b - a, table.spec.digits))
    return cells


def _side_by_side(table: MeasuredTable) -> list[str]:
    """One line per row label; per side its columns joined in one cell ('not run' for a side without an evaluated
    run), then the paper's values of the columns the paper gives."""
    spec = table.spec
    paper_columns = [c for c in spec.columns if _paper_gives(table, c.label)]
    header = [spec.row_header]
    for side in spec.sides:
        header.append(f"{side}: " + " / ".join(table.headers))
        if paper_columns:
            header.append(f"paper {side} (" + " / ".join(c.abbreviated for c in paper_columns) + ")")
    rows = {(row.label, row.spec.side): row for row in table.rows}
    body = []
    for label in dict.fromkeys(row.label for row in table.rows):
        line = [label]
        for side in spec.sides:
            row = rows.get((label, side))
            if row is None:
                line += ["-", "-"] if paper_columns else ["-"]
                continue
            line.append(" / ".join(measured_text(row.cells[c], spec.digits) for c in table.columns)
                        if row.runs else "not run")
            if paper_columns:
                line.append(" / ".join(paper_text(row.cells[c.label].paper) for c in paper_columns))
        body.append(line)
    return markdown_table(header, body)
