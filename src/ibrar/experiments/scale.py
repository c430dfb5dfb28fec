"""The scale study: does Table 4's robustness without adversarial training grow as the CPU-sized setting
approaches the paper's? Rows (1) CE, (2) IB loss and (6) IB-RAR on VGG16, one factor at a time:

- width: 0.25, 0.5, 1.0 (10,000 training images, 10 epochs, the CPU twin's schedule);
- training length: width 0.25 on all 50,000 images for 10 epochs (the CPU twin's StepLR every 4 epochs) and for
  the paper's 60 epochs (StepLR 20 / 0.2). Row (2) joined this axis last: with 60 epochs IB-RAR parts from CE
  only under the paper's attacks, and row (2) says whether the IB loss alone does so too (the paper's claim that
  the mask adds robustness on top of the IB loss). Row (5), the mask without the IB loss, runs at 60 epochs
  alone: where IB-RAR parts from CE only, it says whether the mask by itself does so (the paper: it does not).

Widths 0.25 and 0.5 (measured: under 20 and about 35 CPU minutes a run, training and evaluation) are trained
with at least two seeds, so the seed spread is visible; the points that take hours, with as many as asked for
(`--seeds`; the committed study has three). The training-length runs
are also evaluated with the attack-steps curves: where the paper's 10-step attacks and AutoAttack disagree, the
curves say whether more steps of the same attack close the gap (minutes of evaluation beside hours of training).
At paper scale the study collapses to its end point, the paper's own setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ibrar.experiments.base import Experiment, RunSpec, Scale, format_number, make_runs
from ibrar.experiments.measure import Cell, MeasuredTable, measure_all
from ibrar.experiments.paper_numbers import TABLE4
from ibrar.experiments.results import Results, new_results
from ibrar.experiments.table4 import COLUMNS as TABLE4_COLUMNS
from ibrar.experiments.table_spec import ColumnSpec, RowSpec, TableSpec

ROWS = (("1-ce", "(1) CE only"), ("2-ib", "(2) IB loss"), ("5-ce-mask", "(5) CE + mask"), ("6-ibrar", "(6) IB-RAR"))
EVERY_POINT = ("1-ce", "2-ib", "6-ibrar")  # the rows of every setting; the others only where a Point names them
ATTACKS = ("pgd10", "fgsm", "nifgsm", "autoattack")
COLUMNS = tuple(ColumnSpec(column.label, column.key) for column in TABLE4_COLUMNS)


@dataclass(frozen=True)
class Point:
    """One setting of the study: its axis ('width' or 'epochs'), its value there, and how it is reached."""

    axis: str
    value: float
    label: str
    overrides: tuple[str, ...]
    cheap: bool  # minutes rather than hours on a CPU: trained with two seeds
    rows: tuple[str, ...] = EVERY_POINT  # the Table 4 rows trained at this setting


def points(scale: Scale) -> list[Point]:
    """The settings of the study at a scale (smoke: the same shape, tiny)."""
    if scale.name == "paper":
        return [Point("width", 1.0, "paper setting", (), False)]
    widths = (0.25, 0.5) if scale.name == "smoke" else (0.25, 0.5, 1.0)
    short, long = (1, 2) if scale.name == "smoke" else (10, 60)
    found = [
        # Width 0.25 is the CPU twin unchanged, so its runs are Table 4's cpu-scale runs.
        Point("width", w, f"width {format_number(w)}", () if w == 0.25 else (f"model.width={format_number(w)}",),
              w < 1.0)
        for w in widths
    ]
    all_images = "data.train_subset=null"
    found.append(Point("epochs", short, f"50k images, {short} epochs", (all_images, f"train.epochs={short}"), False))
    found.append(Point("epochs", long, f"50k images, {long} epochs",
                       (all_images, f"train.epochs={long}", f"optim.step_size={max(1, long // 3)}"), False,
                       rows=(*EVERY_POINT, "5-ce-mask")))
    return found


def run_group(row: str, point: Point) -> str:
    """The row name of one (Table 4 row, setting) pair, e.g. `1-ce-width0.5` or `6-ibrar-epochs60`."""
    shown = format_number(point.value) if point.axis == "width" else str(int(point.value))
    return f"{row}-{point.axis}{shown}"


AXES = (("width", "Width (10,000 images, 10 epochs)"),
        ("epochs", "Training length (width 0.25, all 50,000 images)"))
# The paper's Table 4 values of the rows, at its full setting (what the figure marks).
PAPER = {label: TABLE4[f"vgg16-{row}"] for row, label in ROWS}

Series = dict[str, dict[str, list[tuple[float, Mapping[str, Cell]]]]]


def point_rows(point: Point) -> list[tuple[str, str]]:
    """(Table 4 row, its label) of the rows a setting trains, in ROWS' order."""
    return [(row, label) for row, label in ROWS if row in point.rows]


def _pairs(scale: Scale, axis: str) -> list[tuple[str, str, Point]]:
    """(Table 4 row, its label, setting) of one axis, in the table's order."""
    return [(row, label, p) for p in points(scale) if p.axis == axis for row, label in point_rows(p)]


def tables(scale: Scale) -> tuple[TableSpec, ...]:
    """One table per axis (that the scale has points on), each row beside the paper's value at its setting."""
    found = []
    for axis, title in AXES:
        pairs = _pairs(scale, axis)
        if pairs:
            rows = tuple(RowSpec(f"{label}, {p.label}", run_group(row, p),
                                 paper_label=f"{label}, paper (width 1, 50,000 images, 60 epochs)")
                         for row, label, p in pairs)
            paper = {run_group(row, p): TABLE4[f"vgg16-{row}"] for row, _, p in pairs}
            found.append(TableSpec(title, rows, COLUMNS, digits=1, paper=paper, paper_layout="rows",
                                   row_header="row, setting", seeds_column=True))
    return tuple(found)


def study_tables(experiment: Experiment, folder: Path) -> tuple[list[MeasuredTable], Series]:
    """The declared tables measured from the runs' eval.json (rows without an evaluated run have empty cells),
    and the same cells as the figure's series: ``series[axis][row label] = [(axis value, cells), ...]``."""
    measured = measure_all(experiment, folder)
    series: Series = {}
    axes = [axis for axis, _ in AXES if _pairs(experiment.scale, axis)]
    for axis, table in zip(axes, measured, strict=True):
        for (_, label, p), table_row in zip(_pairs(experiment.scale, axis), table.rows, strict=True):
            series.setdefault(axis, {}).setdefault(label, []).append((p.value, table_row.cells))
    return measured, series


def build(scale: Scale, seeds: int = 1) -> Experiment:
    runs: list[RunSpec] = []
    study = points(scale)
    for point in study:
        point_seeds = max(seeds, 2) if point.cheap else seeds
        steps = scale.curve_steps if point.axis == "epochs" else ()
        for row, _ in point_rows(point):
            runs += make_runs(run_group(row, point), f"table4-vgg16-{row}", scale, point_seeds, ATTACKS,
                              point.overrides, steps=steps)

    def report(experiment: Experiment, folder: Path, data_root: str | Path | None = None) -> Results:
        from ibrar import plots

        measured, series = study_tables(experiment, folder)
        figures = plots.plot_scale_study(series, folder / "scale-study", paper=PAPER)
        return new_results(experiment, folder, measured, figures=figures)

    notes = (
        "The paper's rows are its Table 4 values for the row at its full setting (VGG16 width 1, 50,000 images, "
        "60 epochs).",
        "Width 0.25 with 10,000 images and 10 epochs is Table 4's cpu-scale setting.",
    )

    return Experiment(
        "scale",
        "Scale study: Table 4 rows (1), (2), (6) (and (5) at 60 epochs) on VGG16 as the CPU setting approaches "
        "the paper's",
        scale,
        seeds,
        runs,
        report,
        attacks=ATTACKS,
        tables=tables(scale),
        notes=notes,
    )
