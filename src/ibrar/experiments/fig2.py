"""Figure 2: IB-RAR against the other information-bottleneck baselines without adversarial training (CE,
HBaR, VIB, IB-RAR on the robust layers and on all layers), under PGD, CW and NI-FGSM with growing steps.
"""

from __future__ import annotations

from pathlib import Path

from ibrar.experiments.base import Experiment, RunSpec, Scale, make_runs, read_eval
from ibrar.experiments.paper_numbers import FIGURE2_CLEAN
from ibrar.experiments.results import Cell, Results, Row, Table, eval_table, group_values, new_results

NETWORKS = (
    ("ce", "table4-vgg16-1-ce", "CE"),
    ("hbar", "fig2-hbar", "HBaR"),
    ("vib", "fig2-vib", "VIB"),
    ("ibrar-rob", "table4-vgg16-6-ibrar", "IB-RAR(rob)"),
    ("ibrar-all", "fig2-ibrar-all", "IB-RAR(all)"),
)
ATTACKS = ("pgd10", "cw", "nifgsm", "autoattack")
COLUMNS = (
    ("Natural", "clean"),
    ("PGD", "pgd10"),
    ("CW", "cw"),
    ("NIFGSM", "nifgsm"),
    ("AutoAttack", "autoattack"),
)
FAMILIES = (("pgd", "PGD"), ("cw", "CW"), ("nifgsm", "NIFGSM"))
ROWS = tuple((label, group) for group, _, label in NETWORKS)  # (label, run group), in the figure's order


def _curve_value(run_dir: Path, family: str, steps: int) -> float | None:
    value = read_eval(run_dir).curves.get(family, {}).get(str(steps))
    return None if value is None else 100 * float(value)


def network_tables(experiment: Experiment, folder: Path) -> list[Table]:
    """The accuracies beside the paper's clean ones, then one table per attack family: accuracy by steps."""
    paper = {group: {"Natural": FIGURE2_CLEAN[group]} for group, _, _ in NETWORKS}
    tables = [eval_table(experiment, folder, "CIFAR-10 with VGG16, no adversarial training", ROWS, COLUMNS, paper)]
    steps = experiment.scale.curve_steps
    for family, family_label in FAMILIES:
        curve = Table(f"{family_label} accuracy by number of steps", [str(s) for s in steps])
        for label, group in ROWS:
            cells = {
                str(s): Cell(group_values(experiment, folder, group, lambda d, f=family, s=s: _curve_value(d, f, s)))
                for s in steps
            }
            curve.rows.append(Row(label, group, cells))
        tables.append(curve)
    return tables


def build(scale: Scale, seeds: int = 1) -> Experiment:
    runs: list[RunSpec] = []
    for group, config, _ in NETWORKS:
        runs += make_runs(group, config, scale, seeds, ATTACKS, steps=scale.curve_steps)

    def report(experiment: Experiment, folder: Path, data_root: str | Path | None = None) -> Results:
        from ibrar import plots

        first = [folder / experiment.runs_of(group)[0].name for _, group in ROWS]
        figures = plots.plot_steps(first, folder / "fig2-steps", labels=[label for label, _ in ROWS])
        notes = [
            "The paper reports only the clean accuracies of Figure 2 as numbers; its curves are plotted.",
            "The figure shows the first seed of each network.",
        ]
        return new_results(experiment, network_tables(experiment, folder), notes=notes, folder=folder, figures=figures)

    return Experiment(
        "fig2",
        "Figure 2: IB-based defences under attacks with growing steps",
        scale,
        seeds,
        runs,
        report,
        info={"attacks": ATTACKS},
    )
