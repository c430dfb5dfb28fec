"""What a table of an experiment shows, declared once beside its runs: rows (run groups), columns (what is measured
per run), digits, the paper's values and the pairs that get a difference row. `ibrar.experiments.measure` fills a
declaration from the run folders and `ibrar.experiments.render` writes it, for results.md and the docs alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# How the tables name the paper's column labels (the labels stay the keys of the paper's numbers).
HEADERS = {"PGD": "PGD-10", "CW": "CW-L2", "NIFGSM": "NI-FGSM", "Worst case": "L∞ worst case"}

PAPER_LAYOUTS = ("rows", "columns", "none")

# A number read from one run folder (None: the run does not have it).
Metric = Callable[[Path], float | None]


@dataclass(frozen=True)
class ColumnSpec:
    """One column. `label` is the paper's name for it (the key of its numbers and of results.json's cells);
    `key` is what is measured: 'clean', 'worst_case' or a logical attack of eval.json, unless `metric` reads
    the number from each run folder itself (an epoch, a point of a curve)."""

    label: str
    key: str
    metric: Metric | None = None
    header: str = ""  # the name the rendered table shows; "" for HEADERS' name of the label (or the label)
    short: str = ""  # in a side-by-side layout's paper cell; "" for the header

    @property
    def shown(self) -> str:
        return self.header or HEADERS.get(self.label, self.label)

    @property
    def abbreviated(self) -> str:
        return self.short or self.shown


@dataclass(frozen=True)
class RowSpec:
    """One row: its label and the run group whose seeds it averages. `side` places it in a side-by-side layout
    (Table 4's networks): rows of one label are then one line, each side's columns joined in one cell."""

    label: str
    group: str
    side: str = ""
    paper_label: str = ""  # its paper row's label ("" for "<label> (paper)"); rows sharing one show it once


@dataclass(frozen=True)
class Gain:
    """An extra column: each row's `column` minus the reference row's (Table 3: PGD-10 above CE only)."""

    column: str  # a column label
    reference: str  # the reference row's run group
    header: str


@dataclass(frozen=True)
class TableSpec:
    """A table of one experiment as it is shown in results.md and in the docs."""

    title: str
    rows: tuple[RowSpec, ...]
    columns: tuple[ColumnSpec, ...]
    digits: int = 2  # of our means, stds and differences (the paper's numbers keep its two decimals)
    paper: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # run group -> column label -> value
    paper_layout: str = "none"  # the paper's values: "rows" under ours, "columns" beside ours, or "none"
    mark_ours: bool = False  # our rows say "(ours, <scale>)" (where the paper's rows share their labels)
    seeds_column: bool = False  # a column of how many seeds of each row were evaluated ("1 of 2")
    pairs: tuple[tuple[str, str], ...] = ()  # (without, with) run groups: a difference row each, with minus without
    row_header: str = "run"
    gain: Gain | None = None
    part: str = ""  # the part of the paper's table this one comes from (Table 1's CIFAR-10 and Tiny ImageNet)
    notes: tuple[str, ...] = ()  # sentences that belong with the table (what an abbreviation stands for)

    def __post_init__(self) -> None:
        if self.paper_layout not in PAPER_LAYOUTS:
            raise ValueError(f"paper_layout: expected one of {PAPER_LAYOUTS}, got {self.paper_layout!r}")
        groups = [row.group for row in self.rows]
        unknown = [g for pair in self.pairs for g in pair if g not in groups]
        if self.gain is not None and self.gain.reference not in groups:
            unknown.append(self.gain.reference)
        if unknown:
            raise ValueError(f"pairs/gain: expected run groups of the table's rows {groups}, got {unknown}")
        labels = [c.label for c in self.columns]
        if self.gain is not None and self.gain.column not in labels:
            raise ValueError(f"gain.column: expected one of {labels}, got {self.gain.column!r}")
        sided = {bool(row.side) for row in self.rows}
        if len(sided) > 1:
            raise ValueError(f"rows: either every row of {self.title!r} names its side or none does")

    @property
    def groups(self) -> list[str]:
        return [row.group for row in self.rows]

    @property
    def sides(self) -> tuple[str, ...]:
        """The sides of a side-by-side layout, in order (empty: one row per run group)."""
        return tuple(dict.fromkeys(row.side for row in self.rows if row.side))
