"""Carlini-Wagner L2 (Carlini & Wagner 2017) with a fixed constant ``c``, as the paper ran it (torchattacks).

Optimises ``w`` in tanh space, ``x' = (tanh(w) + 1) / 2``, with Adam on
``||x' - x||_2^2 + c * max(z_y - max_{j != y} z_j, -kappa)`` and keeps, per example, the
successful adversarial of smallest L2 distance (the clean input when none succeeds). Like
torchattacks it stops early when the total cost rose since the previous check (ten checks a run).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Attack, batch_view, check_positive, margin


class CW(Attack):
    """Unbounded L2 attack: the output is only clamped to [0, 1]."""

    norm = "l2"

    def __init__(
        self,
        model: nn.Module,
        c: float = 0.1,
        kappa: float = 0.0,
        steps: int = 200,
        lr: float = 0.1,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, seed)
        check_positive("c", c)
        check_positive("kappa", kappa, allow_zero=True)
        check_positive("lr", lr)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        self.c, self.kappa, self.steps, self.lr = c, kappa, steps, lr

    def params(self) -> dict[str, Any]:
        return {"c": self.c, "kappa": self.kappa, "steps": self.steps, "lr": self.lr}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        w = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6)).requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=self.lr)
        best_adv = x.clone()
        best_l2 = torch.full((len(x),), float("inf"), device=x.device)
        prev_cost = float("inf")
        check_every = max(self.steps // 10, 1)
        for step in range(self.steps):
            with torch.enable_grad():
                x_adv = (torch.tanh(w) + 1) / 2
                l2 = (x_adv - x).pow(2).flatten(1).sum(1)
                logits = self.model(x_adv)
                f = margin(logits, y).clamp_min(-self.kappa)
                cost = l2.sum() + self.c * f.sum()
                (grad,) = torch.autograd.grad(cost, w)
            w.grad = grad
            optimizer.step()

            with torch.no_grad():
                improved = (logits.argmax(1) != y) & (l2 < best_l2)
                best_l2 = torch.where(improved, l2, best_l2)
                best_adv = torch.where(batch_view(improved, x), x_adv, best_adv)
                if step % check_every == 0:
                    if cost.item() > prev_cost:
                        break
                    prev_cost = cost.item()
        return best_adv.detach()
