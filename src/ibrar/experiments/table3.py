"""Table 3, robust-layer selection: one VGG16 per hidden layer with the IB loss on that layer alone, plus all
layers, the robust layers and a CE-only reference, under PGD. A layer is called robust when its network beats
CE only by at least `MARGIN_PP` percentage points of PGD accuracy.
"""

from __future__ import annotations

from pathlib import Path

from ibrar.experiments.base import Experiment, RunSpec, Scale, make_runs, model_layers
from ibrar.experiments.measure import MeasuredTable, measure_all
from ibrar.experiments.paper_numbers import TABLE3_ROBUST_LAYERS
from ibrar.experiments.results import Results, new_results
from ibrar.experiments.table_spec import ColumnSpec, Gain, RowSpec, TableSpec

MARGIN_PP = 2.0
ATTACKS = ("pgd10", "autoattack")
COLUMNS = (ColumnSpec("Natural", "clean"), ColumnSpec("PGD", "pgd10"), ColumnSpec("AutoAttack", "autoattack"))
IB_CONFIG = "table4-vgg16-2-ib"  # CE + the IB loss, no mask, no adversarial training
REFERENCE = "ce"  # the run group every single-layer network is compared with


def single_layers(spec: TableSpec) -> list[str]:
    """The layers that the table trains one network for, in order (rows `layer-<name>`)."""
    return [row.group.removeprefix("layer-") for row in spec.rows if row.group.startswith("layer-")]


def robust_layers(table: MeasuredTable) -> tuple[list[str], float | None]:
    """The layers whose single-layer network beats CE only by `MARGIN_PP` points of PGD accuracy, and CE only's
    PGD accuracy (None: CE only has not been evaluated, so no layer is named)."""
    reference = table.row(REFERENCE).cells["PGD"].mean
    found = []
    for row in table.rows:
        pgd = row.cells["PGD"].mean
        if row.group.startswith("layer-") and None not in (pgd, reference) and pgd - reference >= MARGIN_PP:
            found.append(row.group.removeprefix("layer-"))
    return found, reference


def build(scale: Scale, seeds: int = 1) -> Experiment:
    layers = model_layers(IB_CONFIG, scale)
    runs: list[RunSpec] = make_runs(REFERENCE, "table4-vgg16-1-ce", scale, seeds, ATTACKS)
    rows = [RowSpec("CE only", REFERENCE)]
    for layer in layers:
        runs += make_runs(f"layer-{layer}", IB_CONFIG, scale, seeds, ATTACKS, (f"ib.layers=[{layer}]",))
        rows.append(RowSpec(f"IB on {layer}", f"layer-{layer}"))
    for which in ("all", "robust"):
        runs += make_runs(f"layers-{which}", IB_CONFIG, scale, seeds, ATTACKS, (f"ib.layers={which}",))
        rows.append(RowSpec(f"IB on {which} layers", f"layers-{which}"))
    table = TableSpec("PGD accuracy with the IB loss on one layer at a time", tuple(rows), COLUMNS, digits=1,
                      row_header="network", gain=Gain("PGD", REFERENCE, "PGD-10 − CE only"))

    def report(experiment: Experiment, folder: Path, data_root: str | Path | None = None) -> Results:
        measured = measure_all(experiment, folder)
        found, reference = robust_layers(measured[0])
        notes = [
            f"Robust layers = single-layer runs whose PGD accuracy beats CE only by >= {MARGIN_PP} "
            f"percentage points: {', '.join(found) or 'none'} (the paper names "
            f"{', '.join(TABLE3_ROBUST_LAYERS)} for VGG16 on CIFAR-10).",
        ]
        extra = {
            "robust_layers_found": found,
            "margin_pp": MARGIN_PP,
            "ce_pgd": reference,
            "paper_robust_layers": list(TABLE3_ROBUST_LAYERS),
            "layers": single_layers(experiment.tables[0]),
        }
        return new_results(experiment, folder, measured, notes=notes, extra=extra)

    return Experiment(
        "table3",
        "Table 3: robust-layer selection (VGG16, no adversarial training)",
        scale,
        seeds,
        runs,
        report,
        attacks=ATTACKS,
        tables=(table,),
        notes=("The paper's Table 3 numbers are an image in our copy of the paper, so none are shown.",),
    )
