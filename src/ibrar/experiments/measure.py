"""A declared table (`ibrar.experiments.table_spec`) filled from the run folders: per row and column the values of
the seeds that were evaluated, their mean and spread, and the paper's value beside them."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibrar.experiments.base import FULL_ATTACKS, Experiment
from ibrar.experiments.table_spec import ColumnSpec, Metric, RowSpec, TableSpec
from ibrar.run_folder import RunFolder


@dataclass(frozen=True)
class Cell:
    """One measured quantity over the seeds of a row, and the paper's value for it (None: not reported)."""

    values: tuple[float, ...]
    paper: float | None = None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def diff(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "values": list(self.values), "paper": self.paper,
                "diff": self.diff}


@dataclass(frozen=True)
class MeasuredRow:
    """A declared row with its cells (by column label) and how many of its runs were evaluated."""

    spec: RowSpec
    cells: Mapping[str, Cell]
    runs: int
    planned: int

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def group(self) -> str:
        return self.spec.group


@dataclass(frozen=True)
class MeasuredTable:
    """A declared table with its rows measured at one scale. `labels` name the columns in results.json and
    `headers` in the rendered table; at smoke scale both say what stands in for AutoAttack."""

    spec: TableSpec
    rows: tuple[MeasuredRow, ...]
    labels: tuple[str, ...]
    headers: tuple[str, ...]
    scale: str

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def columns(self) -> list[str]:
        """The column labels the cells are keyed by (the paper's names)."""
        return [c.label for c in self.spec.columns]

    def row(self, group: str) -> MeasuredRow:
        for row in self.rows:
            if row.group == group:
                return row
        raise ValueError(f"group: expected one of {self.spec.groups}, got {group!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": list(self.labels),
            "rows": [{"label": r.label, "run": r.group, "seeds": max((len(c.values) for c in r.cells.values()),
                                                                       default=0),
                      "cells": {shown: r.cells[c].to_dict() for shown, c in zip(self.labels, self.columns,
                                                                                 strict=True)}}
                     for r in self.rows],
        }


def evaluated_dirs(experiment: Experiment, folder: Path, group: str) -> list[Path]:
    """The run folders of a row's seeds that hold an evaluation."""
    return [folder / spec.name for spec in experiment.runs_of(group) if RunFolder(folder / spec.name).has_evaluation()]


def group_values(experiment: Experiment, folder: Path, group: str, metric: Metric) -> list[float]:
    """`metric` of each evaluated seed's run folder of a row (a run without the value is left out)."""
    values = [metric(d) for d in evaluated_dirs(experiment, folder, group)]
    return [v for v in values if v is not None]


def column_metric(experiment: Experiment, column: ColumnSpec) -> Metric:
    """How a column's number is read from one run folder: its own metric, else eval.json's accuracy of the attack
    that the experiment's scale runs for the column's logical attack."""
    if column.metric is not None:
        return column.metric
    name = column.key if column.key in ("clean", "worst_case") else experiment.scale.attack(column.key)
    return lambda run_dir: RunFolder(run_dir).require_evaluation().metric(name)


def stand_in(experiment: Experiment, column: ColumnSpec) -> str | None:
    """A column is called AutoAttack only when it holds the reference's standard AutoAttack; at smoke scale the
    stand-in says what it is."""
    if column.key == "autoattack" and experiment.scale.attack(column.key) != "autoattack":
        return f"{experiment.scale.attack(column.key)} (smoke stand-in, not AutoAttack)"
    return None


def header(experiment: Experiment, column: ColumnSpec) -> str:
    """A column's name in the rendered table; where the scale runs a smaller attack than the column's name says
    (smoke: pgd2 for PGD-10), the name says which."""
    if (found := stand_in(experiment, column)) is not None:
        return found
    if column.metric is None and column.key not in ("clean", "worst_case"):
        ran = experiment.scale.attack(column.key)
        if ran != FULL_ATTACKS.get(column.key, ran):
            return f"{column.shown} ({ran} at {experiment.scale.name} scale)"
    return column.shown


def measure(spec: TableSpec, experiment: Experiment, folder: Path,
            metrics: Mapping[str, Metric] | None = None) -> MeasuredTable:
    """Fill `spec` from the run folders under `folder`; `metrics` replaces how the columns of a key are read
    (the docs read 'worst_case' only where eval.json says it is over L-infinity attacks alone)."""
    metrics = metrics or {}
    readers = [metrics.get(c.key) or column_metric(experiment, c) for c in spec.columns]
    rows = []
    for row in spec.rows:
        paper = spec.paper.get(row.group, {})
        cells = {c.label: Cell(tuple(group_values(experiment, folder, row.group, read)), paper.get(c.label))
                 for c, read in zip(spec.columns, readers, strict=True)}
        rows.append(MeasuredRow(row, cells, len(evaluated_dirs(experiment, folder, row.group)),
                                len(experiment.runs_of(row.group))))
    labels = tuple(stand_in(experiment, c) or c.label for c in spec.columns)
    return MeasuredTable(spec, tuple(rows), labels, tuple(header(experiment, c) for c in spec.columns),
                         experiment.scale.name)


def measure_all(experiment: Experiment, folder: Path) -> list[MeasuredTable]:
    """Every table the experiment declares, measured."""
    return [measure(spec, experiment, folder) for spec in experiment.tables]
