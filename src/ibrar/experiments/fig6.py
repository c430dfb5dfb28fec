"""Figure 6, the α/β sweep (α = 0.1·β): PGD-AT VGG16 under PGD, CW and FGSM, TRADES ResNet18 under PGD, FAB
and FGSM, one run per β; the paper picks the β with the best PGD accuracy at a fair clean accuracy.
"""

from __future__ import annotations

from pathlib import Path

from ibrar.experiments.base import Experiment, RunSpec, Scale, format_number, make_runs
from ibrar.experiments.results import Results, new_results
from ibrar.experiments.table_spec import ColumnSpec, RowSpec, TableSpec

BETAS = (0.001, 0.005, 0.01, 0.05, 0.08, 0.1, 0.5, 1.0)
SMOKE_BETAS = (0.01, 0.1)
SETUPS = (
    ("vgg16-pgd_at", "table1-pgd_at-ibrar", ("pgd10", "cw", "fgsm"), "VGG16, PGD-AT"),
    ("resnet18-trades", "resnet18-cifar10-trades-ibrar", ("pgd10", "fab", "fgsm"), "ResNet18, TRADES"),
)
LABELS = {"pgd10": "PGD", "cw": "CW", "fgsm": "FGSM", "fab": "FAB", "autoattack": "AutoAttack"}


def _groups(prefix: str, betas: tuple[float, ...]) -> list[str]:
    return [f"{prefix}-beta{format_number(b)}" for b in betas]


def build(scale: Scale, seeds: int = 1) -> Experiment:
    betas = SMOKE_BETAS if scale.name == "smoke" else BETAS
    runs: list[RunSpec] = []
    tables = []
    for prefix, config, attacks, title in SETUPS:
        for beta, group in zip(betas, _groups(prefix, betas), strict=True):
            overrides = (f"ib.beta={format_number(beta)}", f"ib.alpha={format_number(0.1 * beta)}")
            runs += make_runs(group, config, scale, seeds, (*attacks, "autoattack"), overrides)
        columns = (ColumnSpec("Natural", "clean"), *(ColumnSpec(LABELS[a], a) for a in (*attacks, "autoattack")))
        rows = tuple(RowSpec(f"β = {format_number(b)}", g) for b, g in zip(betas, _groups(prefix, betas),
                                                                            strict=True))
        tables.append(TableSpec(f"{title}: accuracy by β (α = 0.1·β)", rows, columns))

    def report(experiment: Experiment, folder: Path, data_root: str | Path | None = None) -> Results:
        from ibrar import plots

        figures = []
        for prefix, _, attacks, title in SETUPS:
            dirs = [folder / experiment.runs_of(g)[0].name for g in _groups(prefix, betas)]
            figures += plots.plot_beta(
                dirs,
                folder / f"fig6-{prefix}",
                attacks=[scale.attack(a) for a in (*attacks, "autoattack")],
                title=title,
            )
        return new_results(experiment, folder, figures=figures)

    notes = (
        "The paper's Figure 6 is a plot; it gives no numbers, so none are shown.",
        "Figures show the first seed of each β.",
    )
    return Experiment(
        "fig6",
        "Figure 6: the α/β sweep",
        scale,
        seeds,
        runs,
        report,
        attacks=("pgd10", "cw", "fab", "fgsm", "autoattack"),
        tables=tuple(tables),
        notes=notes,
    )
