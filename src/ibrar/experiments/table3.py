"""Table 3, robust-layer selection: one VGG16 per hidden layer with the IB loss on that layer alone, plus all
layers, the robust layers and a CE-only reference, under PGD. A layer is called robust when its network beats
CE only by at least `MARGIN_PP` percentage points of PGD accuracy.
"""

from __future__ import annotations

from pathlib import Path

from ibrar.experiments.base import Experiment, RunSpec, Scale, make_runs, model_layers
from ibrar.experiments.paper_numbers import TABLE3_ROBUST_LAYERS
from ibrar.experiments.results import Results, Table, eval_table, new_results

MARGIN_PP = 2.0
ATTACKS = ("pgd10", "autoattack")
COLUMNS = (("Natural", "clean"), ("PGD", "pgd10"), ("AutoAttack", "autoattack"))
IB_CONFIG = "table4-vgg16-2-ib"  # CE + the IB loss, no mask, no adversarial training


def layer_table(experiment: Experiment, folder: Path) -> Table:
    """Natural, PGD and AutoAttack accuracy of CE only, each single-layer network, all and robust layers."""
    return eval_table(
        experiment, folder, "PGD accuracy with the IB loss on one layer at a time", experiment.info["rows"], COLUMNS
    )


def robust_layers(table: Table) -> tuple[list[str], float | None]:
    """The layers whose single-layer network beats CE only (the first row) by `MARGIN_PP` points of PGD
    accuracy, and CE only's PGD accuracy (None: CE only has not been evaluated, so no layer is named)."""
    reference = table.rows[0].cells["PGD"].mean
    found = []
    for row in table.rows:
        pgd = row.cells["PGD"].mean
        if row.group.startswith("layer-") and None not in (pgd, reference) and pgd - reference >= MARGIN_PP:
            found.append(row.group.removeprefix("layer-"))
    return found, reference


def build(scale: Scale, seeds: int = 1) -> Experiment:
    layers = model_layers(IB_CONFIG, scale)
    runs: list[RunSpec] = make_runs("ce", "table4-vgg16-1-ce", scale, seeds, ATTACKS)
    rows = [("CE only", "ce")]
    for layer in layers:
        runs += make_runs(f"layer-{layer}", IB_CONFIG, scale, seeds, ATTACKS, (f"ib.layers=[{layer}]",))
        rows.append((f"IB on {layer}", f"layer-{layer}"))
    for which in ("all", "robust"):
        runs += make_runs(f"layers-{which}", IB_CONFIG, scale, seeds, ATTACKS, (f"ib.layers={which}",))
        rows.append((f"IB on {which} layers", f"layers-{which}"))

    def report(experiment: Experiment, folder: Path, data_root: str | Path | None = None) -> Results:
        table = layer_table(experiment, folder)
        found, reference = robust_layers(table)
        notes = [
            f"Robust layers = single-layer runs whose PGD accuracy beats CE only by >= {MARGIN_PP} "
            f"percentage points: {', '.join(found) or 'none'} (the paper names "
            f"{', '.join(TABLE3_ROBUST_LAYERS)} for VGG16 on CIFAR-10).",
            "The paper's Table 3 numbers are an image in our copy of the paper, so they are shown as '-'.",
        ]
        extra = {
            "robust_layers_found": found,
            "margin_pp": MARGIN_PP,
            "ce_pgd": reference,
            "paper_robust_layers": list(TABLE3_ROBUST_LAYERS),
            "layers": list(layers),
        }
        return new_results(experiment, [table], notes=notes, extra=extra)

    return Experiment(
        "table3",
        "Table 3: robust-layer selection (VGG16, no adversarial training)",
        scale,
        seeds,
        runs,
        report,
        info={"attacks": ATTACKS, "rows": rows, "layers": layers},
    )
