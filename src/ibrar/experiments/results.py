"""Measured numbers beside the paper's: the tables of an experiment as results.md (to read) and results.json
(to compare programmatically), with the seeds' spread and the scale the runs were made at.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ibrar.experiments.base import Experiment, eval_metric, read_eval
from ibrar.run_files import EVAL_FILE


@dataclass
class Cell:
    """One measured quantity over the seeds of a row, and the paper's value for it (None: not reported)."""

    values: list[float]
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
        return {
            "mean": self.mean,
            "std": self.std,
            "values": self.values,
            "paper": self.paper,
            "diff": self.diff,
        }

    def render(self) -> str:
        if self.mean is None:
            ours = "-"
        elif self.std is None:
            ours = f"{self.mean:.2f}"
        else:
            ours = f"{self.mean:.2f} ± {self.std:.2f}"
        paper = "-" if self.paper is None else f"{self.paper:.2f}"
        diff = "-" if self.diff is None else f"{self.diff:+.2f}"
        return f"{ours} / {paper} ({diff})"


@dataclass
class Row:
    label: str
    group: str
    cells: dict[str, Cell]


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": [
                {
                    "label": r.label,
                    "run": r.group,
                    "seeds": max((len(c.values) for c in r.cells.values()), default=0),
                    "cells": {k: c.to_dict() for k, c in r.cells.items()},
                }
                for r in self.rows
            ],
        }

    def to_markdown(self) -> str:
        lines = [
            f"### {self.title}",
            "",
            "| run | " + " | ".join(self.columns) + " |",
            "| --- |" + " --- |" * len(self.columns),
        ]
        for row in self.rows:
            cells = [row.cells[c].render() if c in row.cells else "-" for c in self.columns]
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


@dataclass
class Results:
    experiment: str
    title: str
    scale: str
    seeds: int
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    attacks: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "title": self.title,
            "scale": self.scale,
            "seeds": self.seeds,
            "attacks": self.attacks,
            "tables": [t.to_dict() for t in self.tables],
            "notes": self.notes,
            "figures": self.figures,
            **self.extra,
        }

    def to_markdown(self) -> str:
        lines = [
            f"# {self.title}",
            "",
            f"Scale: **{self.scale}**. Seeds per run: {self.seeds} (mean ± std over seeds if more than one).",
            "Each cell: measured / paper (measured − paper), accuracies in %; '-' where the paper gives no "
            "number.",
            "",
        ]
        if self.attacks:
            used = ", ".join(f"{k} = `{v}`" for k, v in self.attacks.items())
            lines += [f"Attacks (column name = attack run at this scale): {used}.", ""]
        for table in self.tables:
            lines += [table.to_markdown(), ""]
        if self.notes:
            lines += ["## Notes", "", *[f"- {n}" for n in self.notes], ""]
        if self.figures:
            lines += ["## Figures", "", *[f"- `{f}`" for f in self.figures], ""]
        return "\n".join(lines)

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """Write results.md and results.json in `folder`; returns their paths."""
        folder = Path(folder)
        md, js = folder / "results.md", folder / "results.json"
        md.write_text(self.to_markdown())
        js.write_text(json.dumps(self.to_dict(), indent=2))
        return md, js


def group_values(
    experiment: Experiment, folder: Path, group: str, metric: Callable[[Path], float | None]
) -> list[float]:
    """`metric` of each seed's run folder of a row (runs without eval.json or without the value are left out)."""
    values = [metric(folder / spec.name) for spec in experiment.runs_of(group)
              if (folder / spec.name / EVAL_FILE).is_file()]
    return [v for v in values if v is not None]


def eval_table(
    experiment: Experiment,
    folder: Path,
    title: str,
    rows: Sequence[tuple[str, str]],
    columns: Sequence[tuple[str, str]],
    paper: Mapping[str, Mapping[str, float]] | None = None,
) -> Table:
    """eval.json accuracies: rows are (label, group), columns (label, logical attack or 'clean')."""
    paper = paper or {}
    table = Table(title, [_shown_label(experiment, label, key) for label, key in columns])
    for label, group in rows:
        cells = {}
        for col_label, key in columns:
            name = key if key in ("clean", "worst_case") else experiment.scale.attack(key)
            values = group_values(experiment, folder, group, lambda d, n=name: eval_metric(read_eval(d), n))
            cells[_shown_label(experiment, col_label, key)] = Cell(values, paper.get(group, {}).get(col_label))
        table.rows.append(Row(label, group, cells))
    return table


def _shown_label(experiment: Experiment, label: str, key: str) -> str:
    """A column is labelled AutoAttack only when it holds the reference's standard AutoAttack; at smoke scale
    the stand-in says what it is."""
    if key == "autoattack" and experiment.scale.attack(key) != "autoattack":
        return f"{experiment.scale.attack(key)} (smoke stand-in, not AutoAttack)"
    return label


def new_results(experiment: Experiment, tables: list[Table], folder: Path | None = None,
                figures: Sequence[Path] = (), **kwargs: Any) -> Results:
    """Results of an experiment; figure paths are stored relative to the experiment folder."""
    used = {logical: experiment.scale.attacks[logical] for logical in experiment.info.get("attacks", ())}
    if figures:
        if folder is None:
            raise ValueError("folder: expected the experiment folder that the figures are relative to, got None")
        kwargs["figures"] = [str(Path(p).relative_to(folder)) for p in figures]
    return Results(
        experiment.name,
        experiment.title,
        experiment.scale.name,
        experiment.seeds,
        tables,
        attacks=used,
        **kwargs,
    )
