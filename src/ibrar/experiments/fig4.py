"""Figure 4, convergence: VGG16 on SVHN with MART (which can stall on a plateau near 19.6% accuracy) with
and without the IB loss in the first epoch, and PGD-AT with and without IB-RAR; per-epoch clean and PGD
accuracy come from each run's metrics.jsonl.
"""

from __future__ import annotations

from pathlib import Path

from ibrar.experiments.base import Experiment, RunSpec, Scale, make_runs
from ibrar.experiments.paper_numbers import FIGURE4_PLATEAU
from ibrar.experiments.results import Results, new_results
from ibrar.experiments.table_spec import ColumnSpec, RowSpec, TableSpec
from ibrar.run_folder import RunFolder

SVHN = ("data.name=svhn",)
NETWORKS = (
    ("mart", "table1-mart", (), "MART"),
    (
        "mart-ib-first-epoch",
        "table1-mart",
        ("ib.enabled=true", "ib.epochs=1"),
        "MART + IB loss (epoch 1 only)",
    ),
    ("pgd_at", "table1-pgd_at", (), "PGD-AT"),
    ("pgd_at-ibrar", "table1-pgd_at-ibrar", (), "PGD-AT + IB-RAR"),
)
ATTACKS = ("pgd10", "autoattack")
COLUMNS = (ColumnSpec("Natural", "clean"), ColumnSpec("PGD", "pgd10"), ColumnSpec("AutoAttack", "autoattack"))


def first_epoch_above(run_dir: Path, threshold: float = FIGURE4_PLATEAU) -> float | None:
    """The first epoch whose clean test accuracy exceeds `threshold` % (None: never)."""
    for row in RunFolder(run_dir).metrics():
        if "test_clean_acc" in row and 100 * row["test_clean_acc"] > threshold + 0.5:
            return float(row["epoch"])
    return None


def build(scale: Scale, seeds: int = 1) -> Experiment:
    extra = ("train.epochs=2",) if scale.name == "smoke" else ()  # a curve needs at least two points
    runs: list[RunSpec] = []
    for group, config, overrides, _ in NETWORKS:
        runs += make_runs(group, config, scale, seeds, ATTACKS, (*SVHN, *overrides, *extra))
    rows = tuple(RowSpec(label, group) for group, _, _, label in NETWORKS)
    tables = (
        TableSpec("VGG16 on SVHN, final networks", rows, COLUMNS),
        TableSpec(f"First epoch with clean accuracy above the {FIGURE4_PLATEAU}% plateau (+0.5)", rows,
                  (ColumnSpec("epoch", "epoch", first_epoch_above),), digits=1),
    )

    def report(experiment: Experiment, folder: Path, data_root: str | Path | None = None) -> Results:
        from ibrar import plots

        seeds = [(row.label, folder / spec.name) for row in rows for spec in experiment.runs_of(row.group)]
        figures = plots.plot_convergence([d for _, d in seeds], folder / "fig4-convergence",
                                         labels=[label for label, _ in seeds])
        return new_results(experiment, folder, figures=figures)

    notes = (
        "Per-epoch accuracies are the trainer's monitor on a fixed test subset (metrics.jsonl); the figure shows "
        "every seed of a run in its panel.",
        "The paper gives no table for Figure 4, only the plateau value.",
    )
    return Experiment("fig4", "Figure 4: convergence on SVHN (VGG16)", scale, seeds, runs, report, attacks=ATTACKS,
                      tables=tables, notes=notes)
