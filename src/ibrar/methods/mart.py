"""MART (Wang et al. 2020): adversarial training that weighs misclassified examples more.

Loss, from the paper: BCE(p(x'), y) + beta * mean_i [ KL(p(x_i) || p(x'_i)) * (1 - p_y(x_i)) ], where
BCE(p, y) = -log p_y - log(1 - max_{k != y} p_k) pushes the true class up and the strongest wrong class down.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ibrar.attacks.base import ce_loss
from ibrar.methods.base import AdversarialMethod, Forward, MethodOutput, check_nonnegative, kl_per_example


def log_one_minus_top_wrong(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example log(1 - max_{k != y} p_k), computed as logsumexp over the other classes minus the total.

    The direct log(1 - p) loses all precision when the wrong class's probability is near 1.
    """
    probs_wrong = F.softmax(logits, dim=1).scatter(1, y[:, None], -1.0)
    top_wrong = probs_wrong.argmax(dim=1, keepdim=True)
    without_top = logits.scatter(1, top_wrong, float("-inf"))
    return torch.logsumexp(without_top, dim=1) - torch.logsumexp(logits, dim=1)


class MART(AdversarialMethod):
    """MART with a CE inner attack from a uniform random start; both passes run."""

    name: ClassVar[str] = "mart"

    def __init__(
        self, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10, beta: float = 6.0
    ) -> None:
        super().__init__(eps, alpha, steps)
        self.beta = check_nonnegative("beta", beta)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "beta": self.beta}

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return self.run_pgd(model, x, y, ce_loss, generator)

    def loss(self, forward: Forward, x: Tensor, y: Tensor, x_adv: Tensor | None) -> MethodOutput:
        x_adv = self.require_adv(x_adv)
        logits_clean = forward(x, "clean")
        logits_adv = forward(x_adv, "adv")
        ce = F.cross_entropy(logits_adv, y)
        margin = -log_one_minus_top_wrong(logits_adv, y).mean()
        p_true = F.softmax(logits_clean, dim=1).gather(1, y[:, None]).squeeze(1)
        kl = (kl_per_example(logits_clean, logits_adv) * (1 - p_true)).mean()
        loss = ce + margin + self.beta * kl
        parts = {"ce": ce.detach(), "margin": margin.detach(), "kl": kl.detach()}
        return MethodOutput(loss, logits_adv, parts)
