"""The figures under docs/figures/, redrawn from results/ alone (`ibrar report --figures`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibrar import plots
from ibrar.experiments import fig2, table4
from ibrar.experiments import scale as study
from ibrar.report.collect import OPTIONAL_SIZE_LIMIT, RESULTS_DIR, collected_experiment, group_dirs, relative
from ibrar.run_folder import RunFolder

FIGURES_DIR = "docs/figures"


class NotDrawn(Exception):
    """A figure whose runs are not (all) in results/: the message says which are missing."""


def _first_runs(experiment: Any, folder: Path, rows: Sequence[tuple[str, str]]) -> list[tuple[str, Path]]:
    """(label, first evaluated seed's folder) of each (label, group) row that has one."""
    found = [(label, group_dirs(experiment, folder, [group])) for label, group in rows]
    return [(label, dirs[0]) for label, dirs in found if dirs]


def scale_figure(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """The scale study's robust accuracy against width and training length, the paper's values marked."""
    folder = results / f"scale-{scale}"
    experiment = collected_experiment("scale", scale, folder)
    tables, series = study.study_tables(experiment, folder)
    if not group_dirs(experiment, folder, [row.group for table in tables for row in table.rows]):
        raise NotDrawn(f"no eval.json in `{relative(folder, root)}/`")
    return plots.plot_scale_study(series, stem, paper=study.PAPER)


def fig2_figure(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """Figure 2: accuracy against attack steps (eval.json `curves`), first seed of each network."""
    folder = results / f"fig2-{scale}"
    runs = [(label, d) for label, d in _first_runs(collected_experiment("fig2", scale, folder), folder, fig2.ROWS)
            if RunFolder(d).require_evaluation().curves]
    if not runs:
        raise NotDrawn(f"no eval.json in `{relative(folder, root)}/` holds `curves`")
    return plots.plot_steps([d for _, d in runs], stem, labels=[label for label, _ in runs])


def table1_convergence(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """Clean and PGD test accuracy per epoch (metrics.jsonl) of each Table 1 run, first seed."""
    folder = results / f"table1-{scale}"
    experiment = collected_experiment("table1", scale, folder)
    first = experiment.tables[0].part  # the rows of the other parts (Tiny ImageNet) name theirs
    rows = [(row.label if spec.part == first else f"{row.label}, {spec.part}", row.group)
            for spec in experiment.tables for row in spec.rows]
    runs = _first_runs(experiment, folder, rows)
    if not runs:
        raise NotDrawn(f"no eval.json in `{relative(folder, root)}/`")
    return plots.plot_convergence([d for _, d in runs], stem, labels=[label for label, _ in runs])


def table4_infoplane(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """Figure 5: the information plane (info_plane.jsonl) of Table 4's VGG16 rows (2) and (1), first seed."""
    folder = results / f"table4-{scale}"
    rows = [(label, group) for group, label in table4.INFOPLANE]
    runs = [(label, d) for label, d in _first_runs(collected_experiment("table4", scale, folder), folder, rows)
            if RunFolder(d).info_plane_file.is_file()]
    if not runs:
        groups = " or ".join(f"`{group}`" for group, _ in table4.INFOPLANE)
        raise NotDrawn(f"no run of {groups} in `{relative(folder, root)}/` has info_plane.jsonl (a file over "
                       f"{OPTIONAL_SIZE_LIMIT >> 20} MiB is not collected)")
    return plots.plot_infoplane([d for _, d in runs], stem, labels=[label for label, _ in runs])


@dataclass(frozen=True)
class DocFigure:
    """A figure redrawn from results/ alone: its file stem under docs/figures/ and the function that draws it."""

    name: str
    draw: Callable[[Path, Path, Path], list[Path]]  # (results folder, repository root, out stem) -> files


FIGURES: tuple[DocFigure, ...] = (
    DocFigure("scale-cpu-scale-study", scale_figure),
    DocFigure("fig2-cpu-steps", fig2_figure),
    DocFigure("table1-cpu-convergence", table1_convergence),
    DocFigure("table4-cpu-fig5-infoplane", table4_infoplane),
)


def draw_figures(root: str | Path = ".", results: str | Path | None = None) -> dict[str, list[Path] | str]:
    """Redraw each figure into docs/figures/ (PNG and PDF); per figure its files, or why it was not drawn.
    Figures are not checked for drift (their bytes vary with matplotlib); the tables are."""
    root = Path(root)
    results = Path(results) if results is not None else root / RESULTS_DIR
    out: dict[str, list[Path] | str] = {}
    for figure in FIGURES:
        try:
            out[figure.name] = figure.draw(results, root, root / FIGURES_DIR / figure.name)
        except NotDrawn as reason:
            out[figure.name] = str(reason)
    return out
