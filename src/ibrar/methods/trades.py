"""TRADES (Zhang et al. 2019): trade natural accuracy against the smoothness of the output in the eps-ball.

Two variants. "standard" is the paper's: the inner attack maximises KL(p(x) || p(x')) from x + 0.001 N(0, I),
loss = CE(f(x), y) + beta * KL. "official" is what the IB-RAR authors' code runs (METHOD.md section 4): a CE
inner attack from a uniform start and loss = CE(f(x_adv), y) + beta * KL, where their code fixes beta at 0.5
(the `official` profile sets it, so that the run's config.yaml records the weight it trained with).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ibrar.attacks.base import ce_loss
from ibrar.methods.base import (
    AdversarialMethod,
    Forward,
    MethodOutput,
    check_nonnegative,
    eval_mode,
    kl_per_example,
)

VARIANTS: tuple[str, ...] = ("standard", "official")
START_NOISE = 0.001  # TRADES' Gaussian start for the KL attack


def kl_to_clean(logits_adv: Tensor, clean_probs: Tensor) -> Tensor:
    """Per-example KL(clean_probs || softmax(logits_adv)): the TRADES attack's objective."""
    log_q = F.log_softmax(logits_adv, dim=1)
    return F.kl_div(log_q, clean_probs, reduction="none").sum(dim=1)


class TRADES(AdversarialMethod):
    """TRADES; both the clean and the adversarial pass run. `beta` is TRADES' beta (standard variant only)."""

    name: ClassVar[str] = "trades"

    def __init__(
        self,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        beta: float = 6.0,
        variant: str = "standard",
    ) -> None:
        super().__init__(eps, alpha, steps)
        self.beta = check_nonnegative("beta", beta)
        if variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
        self.variant = variant

    def params(self) -> dict[str, Any]:
        return {**super().params(), "beta": self.beta, "variant": self.variant}

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        if self.variant == "official":
            return self.run_pgd(model, x, y, ce_loss, generator)
        x = x.detach()
        with eval_mode(model), torch.no_grad():
            clean_probs = F.softmax(model(x), dim=1)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.run_pgd(model, x, clean_probs, kl_to_clean, generator, x_init=x + START_NOISE * noise)

    def loss(self, forward: Forward, x: Tensor, y: Tensor, x_adv: Tensor | None) -> MethodOutput:
        x_adv = self.require_adv(x_adv)
        logits_clean = forward(x, "clean")
        logits_adv = forward(x_adv, "adv")
        kl = kl_per_example(logits_clean, logits_adv).mean()  # TRADES' batchmean
        if self.variant == "official":
            ce = F.cross_entropy(logits_adv, y)
            loss = ce + self.beta * kl
        else:
            ce = F.cross_entropy(logits_clean, y)
            loss = ce + self.beta * kl
        return MethodOutput(loss, logits_adv, {"ce": ce.detach(), "kl": kl.detach()})
