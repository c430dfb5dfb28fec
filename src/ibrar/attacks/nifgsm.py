"""NI-FGSM (Lin et al. 2020): momentum iterative FGSM with a Nesterov look-ahead, one of the paper's attacks.

With ``m > 1`` the gradient is averaged over the scaled copies ``x / 2^i`` (scale invariance,
SI-NI-FGSM). The default ``m=1`` is plain NI-FGSM, what the paper evaluated via torchattacks.NIFGSM.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Attack, ce_loss, check_positive, input_gradient, linf_box, project_linf


class NIFGSM(Attack):
    """L-inf NI-FGSM: ``g <- mu g + grad(x + alpha mu g) / ||grad||_1``, ``x <- x + alpha sign(g)``."""

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        decay: float = 1.0,
        m: int = 1,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, seed)
        check_positive("eps", eps, allow_zero=True)
        check_positive("alpha", alpha, allow_zero=True)
        check_positive("decay", decay, allow_zero=True)
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {steps!r}")
        if not isinstance(m, int) or m < 1:
            raise ValueError(f"m (number of scale copies) must be an int >= 1, got {m!r}")
        self.eps, self.alpha, self.steps, self.decay, self.m = eps, alpha, steps, decay, m

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "alpha": self.alpha, "steps": self.steps, "decay": self.decay, "m": self.m}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        momentum = torch.zeros_like(x)
        x_adv = x.clone()
        reduce_dims = tuple(range(1, x.dim()))
        box = linf_box(x, self.eps)
        for _ in range(self.steps):
            x_nes = x_adv + self.decay * self.alpha * momentum
            grad = torch.zeros_like(x)
            for i in range(self.m):
                g, *_ = input_gradient(self.model, x_nes / 2**i, y, ce_loss)
                grad += g / 2**i  # chain rule through the scaling
            grad /= self.m
            l1_mean = grad.abs().mean(dim=reduce_dims, keepdim=True).clamp_min(1e-12)
            momentum = self.decay * momentum + grad / l1_mean
            x_adv = project_linf(x_adv + self.alpha * momentum.sign(), x, self.eps, box)
        return x_adv
