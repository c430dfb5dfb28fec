"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps; the weakest baseline."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .base import Attack, ce_loss, check_positive, input_gradient


class FGSM(Attack):
    """``x_adv = clip(x + eps * sign(grad_x CE(f(x), y)))``."""

    def __init__(self, model: nn.Module, eps: float = 8 / 255, seed: int | None = None) -> None:
        super().__init__(model, seed)
        check_positive("eps", eps, allow_zero=True)
        self.eps = eps

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        grad, *_ = input_gradient(self.model, x, y, ce_loss)
        return (x + self.eps * grad.sign()).clamp(0.0, 1.0)
