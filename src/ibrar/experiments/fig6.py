"""Figure 6, the α/β sweep (α = 0.1·β): PGD-AT VGG16 under PGD, CW and FGSM, TRADES ResNet18 under PGD, FAB
and FGSM, one run per β; the paper picks the β with the best PGD accuracy at a fair clean accuracy.
"""

from __future__ import annotations

from pathlib import Path

from ibrar.experiments.base import Experiment, RunSpec, Scale, format_number, make_runs
from ibrar.experiments.results import Results, eval_table, new_results

BETAS = (0.001, 0.005, 0.01, 0.05, 0.08, 0.1, 0.5, 1.0)
SMOKE_BETAS = (0.01, 0.1)
SETUPS = (
    ("vgg16-pgd_at", "table1-pgd_at-ibrar", ("pgd10", "cw", "fgsm"), "VGG16, PGD-AT"),
    ("resnet18-trades", "resnet18-cifar10-trades-ibrar", ("pgd10", "fab", "fgsm"), "ResNet18, TRADES"),
)
LABELS = {"pgd10": "PGD", "cw": "CW", "fgsm": "FGSM", "fab": "FAB", "autoattack": "AutoAttack"}


def build(scale: Scale, seeds: int = 1) -> Experiment:
    betas = SMOKE_BETAS if scale.name == "smoke" else BETAS
    runs: list[RunSpec] = []
    for prefix, config, attacks, _ in SETUPS:
        for beta in betas:
            overrides = (f"ib.beta={format_number(beta)}", f"ib.alpha={format_number(0.1 * beta)}")
            runs += make_runs(
                f"{prefix}-beta{format_number(beta)}",
                config,
                scale,
                seeds,
                (*attacks, "autoattack"),
                overrides,
            )

    def report(experiment: Experiment, folder: Path, data_root: str | Path | None = None) -> Results:
        from ibrar import plots

        tables, figures = [], []
        for prefix, _, attacks, title in SETUPS:
            groups = [f"{prefix}-beta{format_number(b)}" for b in betas]
            columns = [("Natural", "clean"), *((LABELS[a], a) for a in (*attacks, "autoattack"))]
            tables.append(
                eval_table(
                    experiment,
                    folder,
                    f"{title}: accuracy by β (α = 0.1·β)",
                    [(f"β = {format_number(b)}", g) for b, g in zip(betas, groups, strict=True)],
                    columns,
                )
            )
            dirs = [folder / experiment.runs_of(g)[0].name for g in groups]
            figures += plots.plot_beta(
                dirs,
                folder / f"fig6-{prefix}",
                attacks=[scale.attack(a) for a in (*attacks, "autoattack")],
                title=title,
            )
        notes = [
            "The paper's Figure 6 is a plot; it gives no numbers, so they are shown as '-'.",
            "Figures show the first seed of each β.",
        ]
        return new_results(
            experiment, tables, notes=notes, folder=folder, figures=figures
        )

    return Experiment(
        "fig6",
        "Figure 6: the α/β sweep",
        scale,
        seeds,
        runs,
        report,
        info={"attacks": ("pgd10", "cw", "fab", "fgsm", "autoattack")},
    )
