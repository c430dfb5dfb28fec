"""Table 1: PGD-AT, TRADES and MART, each without and with IB-RAR, on VGG16 / CIFAR-10 and Tiny ImageNet,
under PGD, CW, FGSM, FAB, NI-FGSM and AutoAttack. `at_table` is shared with Table 2 (other networks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ibrar.experiments.base import Experiment, RunSpec, Scale, make_runs
from ibrar.experiments.paper_numbers import TABLE1
from ibrar.experiments.results import declared_results
from ibrar.experiments.table_spec import ColumnSpec, RowSpec, TableSpec

METHODS = ("pgd_at", "trades", "mart")
METHOD_LABELS = {"pgd_at": "PGD-AT", "trades": "TRADES", "mart": "MART"}
ATTACKS = ("pgd10", "cw", "fgsm", "fab", "nifgsm", "autoattack")
COLUMNS = (
    ColumnSpec("Natural", "clean"),
    ColumnSpec("PGD", "pgd10"),
    ColumnSpec("CW", "cw"),
    ColumnSpec("FGSM", "fgsm"),
    ColumnSpec("FAB", "fab"),
    ColumnSpec("NIFGSM", "nifgsm"),
    ColumnSpec("AutoAttack", "autoattack"),
    ColumnSpec("Worst case", "worst_case"),
)


@dataclass(frozen=True)
class Block:
    """One half of an adversarial-training table: a network on a dataset, its config for each row."""

    title: str
    prefix: str  # run groups are <prefix>-<method>[-ibrar]
    configs: dict[str, str]  # method -> paper config name without "-ibrar" (the IB-RAR twin adds it)
    overrides: tuple[str, ...] = ()


def at_table(
    name: str,
    title: str,
    blocks: Sequence[Block],
    scale: Scale,
    seeds: int,
    paper: dict[str, dict[str, float]],
    notes: Sequence[str] = (),
) -> Experiment:
    """{method} x {without, with IB-RAR} for each block, each run evaluated under the Table 1 attacks; a table
    per method pair, its difference beside the paper's."""
    runs: list[RunSpec] = []
    tables: list[TableSpec] = []
    for block in blocks:
        for method, config in block.configs.items():
            rows = []
            for suffix, label in (("", ""), ("-ibrar", " + IB-RAR")):
                group = f"{block.prefix}-{method}{suffix}"
                runs += make_runs(group, f"{config}{suffix}", scale, seeds, ATTACKS, block.overrides)
                rows.append(RowSpec(f"{METHOD_LABELS[method]}{label}", group))
            tables.append(TableSpec(
                f"{METHOD_LABELS[method]}, {block.title}", tuple(rows), COLUMNS, digits=2,
                paper={row.group: paper[row.group] for row in rows if row.group in paper}, paper_layout="rows",
                mark_ours=True, pairs=((rows[0].group, rows[1].group),), row_header="method", part=block.title))
    return Experiment(name, title, scale, seeds, runs, declared_results, attacks=ATTACKS, tables=tuple(tables),
                      notes=tuple(notes))


def build(scale: Scale, seeds: int = 1) -> Experiment:
    blocks = [Block("CIFAR-10 with VGG16", "vgg16-cifar10", {m: f"table1-{m}" for m in METHODS})]
    tiny = {"pgd_at": "vgg16-tinyimagenet-pgd_at"}
    if (
        scale.name == "paper"
    ):  # the other two Tiny ImageNet pairs only at full scale (64x64 images are costly)
        tiny |= {m: f"table1-{m}" for m in ("trades", "mart")}
    blocks.append(Block("Tiny ImageNet with VGG16", "vgg16-tinyimagenet", tiny, ("data.name=tinyimagenet",)))
    notes = ["Tiny ImageNet: the PGD-AT pair at every scale, TRADES and MART pairs at paper scale only."]
    return at_table(
        "table1",
        "Table 1: adversarial training with and without IB-RAR (VGG16)",
        blocks,
        scale,
        seeds,
        TABLE1,
        notes,
    )
