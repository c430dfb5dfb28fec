"""Measured numbers beside the paper's: the tables of an experiment as results.md (to read, in the layout the docs
show them) and results.json (to compare programmatically), with the seeds' spread and the scale of the runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ibrar.experiments.base import Experiment
from ibrar.experiments.measure import MeasuredTable, measure_all
from ibrar.experiments.render import render_table


@dataclass
class Results:
    experiment: str
    title: str
    scale: str
    seeds: int
    tables: list[MeasuredTable]
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

    def seeds_per_row(self) -> str:
        """The evaluated rows' seed counts ("2", or "1 to 2" where rows differ, as the scale study's cheap
        points do); the number asked for while no row has been evaluated."""
        counts = sorted({row.runs for table in self.tables for row in table.rows if row.runs})
        if not counts:
            return f"{self.seeds} (none evaluated yet)"
        return str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"

    def to_markdown(self) -> str:
        lines = [
            f"# {self.title}",
            "",
            f"Scale: **{self.scale}**. Seeds per row: {self.seeds_per_row()} (mean ± std over seeds if more "
            "than one).",
            "Accuracies in %. 'not run': the row has no evaluated run; '-': no number (or the paper gives none). "
            "A difference row is the second row of a pair minus the first.",
            "",
        ]
        if self.attacks:
            used = ", ".join(f"{k} = `{v}`" for k, v in self.attacks.items())
            lines += [f"Attacks (column name = attack run at this scale): {used}.", ""]
        for table in self.tables:
            lines += [f"### {table.title}", "", *render_table(table), ""]
            if table.spec.notes:
                lines += [" ".join(table.spec.notes), ""]
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


def new_results(experiment: Experiment, folder: Path, tables: Sequence[MeasuredTable] | None = None,
                notes: Sequence[str] = (), figures: Sequence[Path] = (), extra: dict[str, Any] | None = None
                ) -> Results:
    """Results of an experiment: its declared tables measured from `folder` (unless `tables` are given), its notes
    and then `notes`; figure paths are stored relative to the experiment folder."""
    used = {logical: experiment.scale.attacks[logical] for logical in experiment.attacks}
    return Results(
        experiment.name,
        experiment.title,
        experiment.scale.name,
        experiment.seeds,
        list(measure_all(experiment, folder) if tables is None else tables),
        notes=[*experiment.notes, *notes],
        figures=[str(Path(p).relative_to(folder)) for p in figures],
        extra=dict(extra or {}),
        attacks=used,
    )


def declared_results(experiment: Experiment, folder: Path, data_root: str | Path | None = None) -> Results:
    """An experiment's report when its declared tables and notes are all it shows."""
    return new_results(experiment, folder)
