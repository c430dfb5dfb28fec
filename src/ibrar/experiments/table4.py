"""Table 4, the ablation: CE only, the IB loss, each of its two terms alone, CE + mask, and IB-RAR (IB loss +
mask), for VGG16 and ResNet18 without adversarial training. It also draws Figure 3 (t-SNE of rows 1 and 6),
Figure 5 (the information plane of rows 2 and 1) and Table 5 (the classes PGD examples land in, row 6).
"""

from __future__ import annotations

from pathlib import Path

from ibrar.experiments.base import Experiment, RunSpec, Scale, make_runs
from ibrar.experiments.paper_numbers import TABLE4
from ibrar.experiments.results import Results, new_results
from ibrar.experiments.table_spec import ColumnSpec, RowSpec, TableSpec

ROWS = (
    ("1-ce", "(1) CE only"),
    ("2-ib", "(2) IB loss"),
    ("3-ce-hx", "(3) CE + α·ΣHSIC(X,T)"),
    ("4-ce-hy", "(4) CE − β·ΣHSIC(Y,T)"),
    ("5-ce-mask", "(5) CE + mask"),
    ("6-ibrar", "(6) IB loss + mask"),
)
MODELS = (("vgg16", "VGG16"), ("resnet18", "ResNet18"))
ATTACKS = ("pgd10", "nifgsm", "fgsm", "autoattack")
COLUMNS = (
    ColumnSpec("Natural", "clean", short="Nat"),
    ColumnSpec("PGD", "pgd10", short="PGD"),
    ColumnSpec("NIFGSM", "nifgsm", short="NI"),
    ColumnSpec("FGSM", "fgsm"),
    ColumnSpec("AutoAttack", "autoattack", header="AA"),
)
# The networks side by side, each row's accuracies in one cell beside the paper's.
TABLE = TableSpec(
    "CIFAR-10 with VGG16 and ResNet18",
    tuple(RowSpec(row_label, f"{model}-{row}", side=label) for model, label in MODELS for row, row_label in ROWS),
    COLUMNS,
    digits=1,
    paper={f"{model}-{row}": TABLE4[f"{model}-{row}"] for model, _ in MODELS for row, _ in ROWS},
    row_header="row",
    notes=("AA = AutoAttack.",),
)
INFOPLANE = (("vgg16-2-ib", "IB loss"), ("vgg16-1-ce", "CE only"))  # Figure 5: (run group, label), first seeds
TSNE = (("vgg16-1-ce", "(a) CE"), ("vgg16-6-ibrar", "(b) IB-RAR"))  # Figure 3: (run group, label), first seeds
CONFUSION = "vgg16-6-ibrar"  # Table 5: the run group whose PGD-10 examples it counts, first seed


def build(scale: Scale, seeds: int = 1) -> Experiment:
    runs: list[RunSpec] = []
    for model, _ in MODELS:
        for row, _ in ROWS:
            runs += make_runs(f"{model}-{row}", f"table4-{model}-{row}", scale, seeds, ATTACKS)

    def report(experiment: Experiment, folder: Path, data_root: str | Path | None = None) -> Results:
        from ibrar import plots
        from ibrar.figure_data import confusion_of, features_of

        first = {
            group: folder / experiment.runs_of(group)[0].name
            for group in ("vgg16-1-ce", "vgg16-2-ib", "vgg16-6-ibrar")
        }
        figures = plots.plot_tsne(
            [features_of(first[group], data_root, scale.plot_n) for group, _ in TSNE],
            folder / "fig3-tsne",
            labels=[label for _, label in TSNE],
        )
        figures += plots.plot_infoplane(
            [first[group] for group, _ in INFOPLANE],
            folder / "fig5-infoplane",
            labels=[label for _, label in INFOPLANE],
        )
        figures += plots.plot_confusion(
            confusion_of(first[CONFUSION], data_root, scale.plot_n), folder / "table5-confusion"
        )
        notes = [
            "Figure 3 (t-SNE), Figure 5 (information plane) and Table 5 (confusion of PGD examples) are "
            "drawn from the first seed of the VGG16 rows."
        ]
        return new_results(experiment, folder, notes=notes, figures=figures)

    return Experiment(
        "table4",
        "Table 4: ablation (no adversarial training)",
        scale,
        seeds,
        runs,
        report,
        attacks=ATTACKS,
        tables=(TABLE,),
    )
