"""Table 2: the Table 1 comparison on other networks: ResNet18 / CIFAR-10 and WideResNet-28-10 / CIFAR-100."""

from __future__ import annotations

from ibrar.experiments.base import Experiment, Scale
from ibrar.experiments.paper_numbers import TABLE2
from ibrar.experiments.table1 import METHODS, Block, at_table


def build(scale: Scale, seeds: int = 1) -> Experiment:
    blocks = [
        Block("CIFAR-10 with ResNet18", "resnet18-cifar10", {m: f"resnet18-cifar10-{m}" for m in METHODS}),
        Block(
            "CIFAR-100 with WRN-28-10", "wrn28_10-cifar100", {m: f"wrn28_10-cifar100-{m}" for m in METHODS}
        ),
    ]
    notes = ["The paper's Table 2 is an image in our copy of the paper, so its numbers are shown as '-'."]
    return at_table(
        "table2",
        "Table 2: adversarial training with and without IB-RAR (ResNet18, WRN-28-10)",
        blocks,
        scale,
        seeds,
        TABLE2,
        notes,
    )
