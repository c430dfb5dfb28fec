"""PGD adversarial training (Madry et al. 2018): minimise the cross-entropy of the worst case in the ball."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ibrar.attacks.base import ce_loss
from ibrar.methods.base import AdversarialMethod, Forward, MethodOutput


class PGDAT(AdversarialMethod):
    """x_adv = PGD on CE from a uniform random start; loss = CE(f(x_adv), y). Only the "adv" pass runs."""

    name: ClassVar[str] = "pgd_at"

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return self.run_pgd(model, x, y, ce_loss, generator)

    def loss(self, forward: Forward, x: Tensor, y: Tensor, x_adv: Tensor | None) -> MethodOutput:
        logits_adv = forward(self.require_adv(x_adv), "adv")
        ce = F.cross_entropy(logits_adv, y)
        return MethodOutput(ce, logits_adv, {"ce": ce.detach()})
