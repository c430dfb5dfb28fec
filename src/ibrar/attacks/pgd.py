"""Projected gradient descent (Madry et al. 2018), the workhorse of adversarial training and evaluation.

``pgd_linf`` is the functional core the training methods call for their inner maximisation (any
loss, e.g. TRADES' KL); the ``PGD`` class adds restarts and the evaluation losses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import (
    Attack,
    LossFn,
    batch_view,
    ce_loss,
    check_positive,
    cw_loss,
    input_gradient,
    linf_box,
    project_linf,
)

LOSSES: dict[str, LossFn] = {"ce": ce_loss, "cw": cw_loss}


def pgd_linf(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    *,
    x_init: Tensor | None = None,
) -> Tensor:
    """L-inf PGD maximising ``loss_fn(model(x_adv), y)`` (per-example or summed) within ``eps`` of ``x``.

    ``y`` is passed to ``loss_fn`` untouched, so it may be labels or, for TRADES, clean logits.
    The model's mode is left as it is: callers decide (the ``Attack`` classes put it in eval).
    ``x_init`` overrides the start (e.g. TRADES' small Gaussian start); otherwise the start is
    uniform in the ball when ``random_start`` and ``x`` itself when not.
    """
    check_positive("eps", eps, allow_zero=True)
    check_positive("alpha", alpha, allow_zero=True)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    x = x.detach()
    if x_init is not None:
        x_adv = project_linf(x_init.detach(), x, eps)
    elif random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = (x + eps * (2 * noise - 1)).clamp(0.0, 1.0)
    else:
        x_adv = x.clone()
    box = linf_box(x, eps)
    for _ in range(steps):
        grad, *_ = input_gradient(model, x_adv, y, loss_fn)
        x_adv = project_linf(x_adv + alpha * grad.sign(), x, eps, box)
    return x_adv


class PGD(Attack):
    """L-inf PGD with ``restarts``; per example it keeps the restart that fools the model, else the
    one with the highest loss."""

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        loss: str = "ce",
        seed: int | None = None,
    ) -> None:
        super().__init__(model, seed)
        check_positive("eps", eps, allow_zero=True)
        check_positive("alpha", alpha, allow_zero=True)
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {steps!r}")
        if not isinstance(restarts, int) or restarts < 1:
            raise ValueError(f"restarts must be an int >= 1, got {restarts!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        self.eps, self.alpha, self.steps = eps, alpha, steps
        self.random_start, self.restarts, self.loss = random_start, restarts, loss

    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps, "alpha": self.alpha, "steps": self.steps,
            "random_start": self.random_start, "restarts": self.restarts, "loss": self.loss,
        }

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        loss_fn = LOSSES[self.loss]
        best = x.clone()
        best_fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best_loss = torch.full((len(x),), float("-inf"), device=x.device)
        for _ in range(self.restarts):
            x_adv = pgd_linf(
                self.model, x, y, loss_fn, self.eps, self.alpha, self.steps, self.random_start, self.generator
            )
            logits = self.predict(x_adv)
            fooled = logits.argmax(1) != y
            loss = loss_fn(logits, y)
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
            best = torch.where(batch_view(better, x), x_adv, best)
            best_fooled = best_fooled | fooled
            best_loss = torch.where(better, loss, best_loss)
        return best
