"""Table 6, the adaptive attack: PGD on the whole IB-RAR loss (10 and 100 steps) against a plain CE network,
an IB-RAR network and an adversarially trained (PGD-AT) IB-RAR network, beside ordinary PGD and AutoAttack.
"""

from __future__ import annotations

from ibrar.experiments.base import Experiment, RunSpec, Scale, make_runs
from ibrar.experiments.paper_numbers import TABLE6
from ibrar.experiments.results import declared_results
from ibrar.experiments.table_spec import ColumnSpec, RowSpec, TableSpec

NETWORKS = (
    ("plain-ce", "table4-vgg16-1-ce", "Plain (CE)"),
    ("plain-ibrar", "table4-vgg16-6-ibrar", "Plain (IB-RAR)"),
    ("at-ibrar", "table1-pgd_at-ibrar", "PGD-AT (IB-RAR)"),
)
ATTACKS = ("pgd10", "adaptive10", "adaptive100", "autoattack")
# Table 6's networks are runs of Table 4 and Table 1 (the same configs): (experiment, run group) -> its network.
# The GPU kit evaluates these runs with Table 6's attacks as well, on AutoAttack's seeded subset, and
# `ibrar.report.collect_table6_view` gives Table 6 its view of them, so that a lease trains each network once.
SOURCES = {("table4", "vgg16-1-ce"): "plain-ce", ("table4", "vgg16-6-ibrar"): "plain-ibrar",
           ("table1", "vgg16-cifar10-pgd_at-ibrar"): "at-ibrar"}
COLUMNS = (
    ColumnSpec("Natural", "clean"),
    ColumnSpec("PGD", "pgd10"),
    ColumnSpec("PGD_AD-10", "adaptive10"),
    ColumnSpec("PGD_AD-100", "adaptive100"),
    ColumnSpec("AutoAttack", "autoattack"),
    ColumnSpec("Worst case", "worst_case"),
)
# The three networks under ordinary PGD, PGD_AD with 10 and 100 steps, AutoAttack, and the worst case.
TABLE = TableSpec(
    "CIFAR-10 with VGG16 under the adaptive attack PGD_AD",
    tuple(RowSpec(label, group) for group, _, label in NETWORKS),
    COLUMNS,
    digits=1,
    paper=TABLE6,
    paper_layout="rows",
    mark_ours=True,
    row_header="network",
)


def network_of(experiment: str, group: str) -> str | None:
    """The Table 6 network that a run group of another experiment is (`SOURCES`), or None."""
    return SOURCES.get((experiment, group))


def build(scale: Scale, seeds: int = 1) -> Experiment:
    runs: list[RunSpec] = []
    for group, config, _ in NETWORKS:
        runs += make_runs(group, config, scale, seeds, ATTACKS)
    notes = (
        "PGD_AD maximises the network's own IB-RAR loss (Eq. 1); for the CE network it uses the default IB layers "
        "and weights.",
        "The paper's Table 6 is an image in our copy of the paper, so it has no rows here.",
    )
    return Experiment(
        "table6",
        "Table 6: IB-RAR against the adaptive white-box attack",
        scale,
        seeds,
        runs,
        declared_results,
        attacks=ATTACKS,
        tables=(TABLE,),
        notes=notes,
    )
