"""Figure 2: IB-RAR against the other information-bottleneck baselines without adversarial training (CE,
HBaR, VIB, IB-RAR on the robust layers and on all layers), under PGD, CW and NI-FGSM with growing steps.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ibrar.experiments.base import Experiment, RunSpec, Scale, make_runs
from ibrar.experiments.measure import MeasuredTable, measure_all
from ibrar.experiments.paper_numbers import FIGURE2_CLEAN
from ibrar.experiments.results import Results, new_results
from ibrar.experiments.table_spec import ColumnSpec, RowSpec, TableSpec
from ibrar.run_folder import RunFolder

NETWORKS = (
    ("ce", "table4-vgg16-1-ce", "CE"),
    ("hbar", "fig2-hbar", "HBaR"),
    ("vib", "fig2-vib", "VIB"),
    ("ibrar-rob", "table4-vgg16-6-ibrar", "IB-RAR(rob)"),
    ("ibrar-all", "fig2-ibrar-all", "IB-RAR(all)"),
)
ATTACKS = ("pgd10", "cw", "nifgsm", "autoattack")
COLUMNS = (
    ColumnSpec("Natural", "clean"),
    ColumnSpec("PGD", "pgd10"),
    ColumnSpec("CW", "cw"),
    ColumnSpec("NIFGSM", "nifgsm"),
    ColumnSpec("AutoAttack", "autoattack"),
)
FAMILIES = (("pgd", "PGD"), ("cw", "CW"), ("nifgsm", "NIFGSM"))  # eval.json's curve names, the paper's labels
# How the tables name a family's curve (any number of steps, so not "PGD-10").
FAMILY_NAMES = {"pgd": "PGD", "cw": "CW-L2", "nifgsm": "NI-FGSM"}
ROWS = tuple((label, group) for group, _, label in NETWORKS)  # (label, run group), in the figure's order


def curve_value(run_dir: Path, family: str, steps: int) -> float | None:
    """eval.json's accuracy (%) of an attack family at a number of steps (its `curves`)."""
    value = RunFolder(run_dir).require_evaluation().curves.get(family, {}).get(str(steps))
    return None if value is None else 100 * float(value)


def tables(scale: Scale) -> tuple[TableSpec, ...]:
    """The accuracies beside the paper's clean ones, then one table per attack family: accuracy by steps."""
    rows = tuple(RowSpec(label, group) for label, group in ROWS)
    paper = {group: {"Natural": FIGURE2_CLEAN[group]} for group, _, _ in NETWORKS}
    found = [TableSpec("CIFAR-10 with VGG16, no adversarial training", rows, COLUMNS, digits=1, paper=paper,
                       paper_layout="columns", row_header="network")]
    for family, _ in FAMILIES:
        columns = tuple(ColumnSpec(str(s), f"curve:{family}:{s}", partial(curve_value, family=family, steps=s),
                                   header=f"{s} steps" if s != 1 else "1 step") for s in scale.curve_steps)
        found.append(TableSpec(f"{FAMILY_NAMES[family]}: accuracy by number of attack steps", rows, columns, digits=1,
                               row_header="network"))
    return tuple(found)


def network_tables(experiment: Experiment, folder: Path) -> list[MeasuredTable]:
    """The declared tables measured: the networks' accuracies, then the attack-steps curves per family."""
    return measure_all(experiment, folder)


def build(scale: Scale, seeds: int = 1) -> Experiment:
    runs: list[RunSpec] = []
    for group, config, _ in NETWORKS:
        runs += make_runs(group, config, scale, seeds, ATTACKS, steps=scale.curve_steps)

    def report(experiment: Experiment, folder: Path, data_root: str | Path | None = None) -> Results:
        from ibrar import plots

        seeds = [(label, folder / spec.name) for label, group in ROWS for spec in experiment.runs_of(group)]
        figures = plots.plot_steps([d for _, d in seeds], folder / "fig2-steps", labels=[label for label, _ in seeds])
        return new_results(experiment, folder, figures=figures)

    notes = (
        "The paper reports only the clean accuracies of Figure 2 as numbers; its curves are plotted.",
        "The figure shows each network's mean over its seeds, with a band from the lowest seed to the highest.",
    )
    return Experiment(
        "fig2",
        "Figure 2: IB-based defences under attacks with growing steps",
        scale,
        seeds,
        runs,
        report,
        attacks=ATTACKS,
        tables=tables(scale),
        notes=notes,
    )
