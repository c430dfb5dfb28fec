"""The per-epoch robustness signal: clean and PGD accuracy on a fixed, class-balanced test subset.

It is `ibrar.evaluate` on that subset (the same rules as the final evaluation: eval mode, only clean-correct
examples attacked, a clean mistake counts as broken), summed over ranks under DDP.
"""

from __future__ import annotations

import torch
from torch import nn

from ibrar.attacks import PGD
from ibrar.data import ImageData
from ibrar.data.loader import balanced_subset
from ibrar.distributed import all_reduce_sum
from ibrar.evaluate import evaluate


class Monitor:
    """Each rank takes every world_size-th example of the subset; the accuracies are over all of them."""

    def __init__(self, test_data: ImageData, n: int, eps: float, pgd_steps: int, batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world_size: int = 1) -> None:
        n = min(n, len(test_data))
        chosen = balanced_subset(test_data.labels, n, seed)[rank::world_size] if n else torch.zeros(0).long()
        self.images, self.labels = test_data.images[chosen], test_data.labels[chosen]
        self.eps, self.pgd_steps, self.batch_size = eps, pgd_steps, batch_size
        self.seed, self.device = seed + rank, device

    @property
    def enabled(self) -> bool:
        return len(self.labels) > 0

    def __call__(self, model: nn.Module) -> dict[str, float]:
        if not self.enabled:
            return {}
        steps = self.pgd_steps
        attacks = {"pgd": PGD(model, eps=self.eps, alpha=self.eps / 4, steps=steps, seed=self.seed)} if steps else {}
        report = evaluate(model, self.images, self.labels, attacks, batch_size=self.batch_size,
                          device=self.device, seed=self.seed)
        robust = report.robust["pgd"].sum() if steps else 0
        counts = torch.tensor([round(report.clean * report.n), float(robust), float(report.n)], device=self.device)
        correct, robust, n = all_reduce_sum(counts).tolist()
        out = {"test_clean_acc": correct / n}
        if steps:
            out[f"test_pgd{steps}_acc"] = robust / n
        return out
