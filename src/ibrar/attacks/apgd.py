"""Auto-PGD (Croce & Hein 2020): PGD without a step size to tune, the first stage of AutoAttack.

The step size starts at 2 eps and is halved at checkpoints where the loss stopped rising
(at most ``rho`` of the steps since the last checkpoint increased it, the reference's ``<=``, or no new
best since the last checkpoint); after a halving the run
restarts from the best point. Steps carry momentum 0.75. APGD-T maximises the targeted DLR loss
towards each of the top ``n_target_classes`` other classes in turn.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Attack, LossFn, batch_view, ce_loss, check_positive, input_gradient, linf_box, margin, project_linf


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference-of-logits-ratio loss to maximise: ``-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)``."""
    z = logits.sort(dim=1).values
    return -margin(logits, y) / (z[:, -1] - z[:, -3] + 1e-12)


def targeted_dlr_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR to maximise: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``."""
    z = logits.sort(dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + 1e-12)


def halve_step(n_increase: Tensor, period: int, rho: float, halved_last: Tensor, loss_max: Tensor,
               loss_max_last: Tensor) -> Tensor:
    """APGD's checkpoint rule, per example: halve when at most ``rho`` of the last ``period`` steps raised the
    loss (the reference's ``<=``), or when the step was not halved last time and the best loss did not rise."""
    return (n_increase <= rho * period) | (~halved_last & (loss_max <= loss_max_last))


def apgd_linf(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    eps: float,
    steps: int,
    rho: float = 0.75,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One APGD run. Returns ``(x_adv, fooled)``: the first misclassified iterate found for fooled
    examples, the highest-loss iterate for the others."""
    period = max(int(0.22 * steps), 1)
    period_min, period_decrease = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)

    t = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
    x_adv = (x + eps * t / batch_view(t.flatten(1).abs().amax(1), x)).clamp(0.0, 1.0)
    grad, loss, logits = input_gradient(model, x_adv, y, loss_fn)
    fooled = logits.argmax(1) != y
    x_fooled = x_adv.clone()
    x_max, loss_max, grad_max = x_adv.clone(), loss.clone(), grad.clone()

    step_size = torch.full((len(x),), 2 * eps, device=x.device, dtype=x.dtype)
    x_prev, loss_prev = x_adv.clone(), loss.clone()
    n_increase = torch.zeros(len(x), device=x.device)
    loss_max_at_check = loss_max.clone()
    halved_at_check = torch.ones(len(x), dtype=torch.bool, device=x.device)
    since_check = 0
    box = linf_box(x, eps)
    for i in range(steps):
        momentum = 0.75 if i > 0 else 1.0
        z = project_linf(x_adv + batch_view(step_size, x) * grad.sign(), x, eps, box)
        x_next = project_linf(x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev), x, eps, box)
        x_prev, x_adv = x_adv, x_next

        grad, loss, logits = input_gradient(model, x_adv, y, loss_fn)
        fooled_now = logits.argmax(1) != y
        x_fooled = torch.where(batch_view(fooled_now & ~fooled, x), x_adv, x_fooled)
        fooled |= fooled_now
        n_increase += (loss > loss_prev).float()
        loss_prev = loss
        improved = loss > loss_max
        x_max = torch.where(batch_view(improved, x), x_adv, x_max)
        grad_max = torch.where(batch_view(improved, x), grad, grad_max)
        loss_max = torch.where(improved, loss, loss_max)

        since_check += 1
        if since_check == period:  # a checkpoint: halve the step where progress stalled
            halve = halve_step(n_increase, period, rho, halved_at_check, loss_max, loss_max_at_check)
            step_size = torch.where(halve, step_size / 2, step_size)
            x_adv = torch.where(batch_view(halve, x), x_max, x_adv)
            grad = torch.where(batch_view(halve, x), grad_max, grad)
            halved_at_check, loss_max_at_check = halve, loss_max.clone()
            n_increase.zero_()
            since_check = 0
            period = max(period - period_decrease, period_min)
    return torch.where(batch_view(fooled, x), x_fooled, x_max), fooled


def _check_common(eps: float, steps: int, n_restarts: int, rho: float) -> None:
    check_positive("eps", eps, allow_zero=True)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not isinstance(n_restarts, int) or n_restarts < 1:
        raise ValueError(f"n_restarts must be an int >= 1, got {n_restarts!r}")
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], got {rho!r}")


class APGD(Attack):
    """Untargeted APGD with the CE or DLR loss; restarts run on the examples still robust."""

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 100,
        loss: str = "ce",
        n_restarts: int = 1,
        rho: float = 0.75,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, seed)
        _check_common(eps, steps, n_restarts, rho)
        if loss not in ("ce", "dlr"):
            raise ValueError(f"loss must be 'ce' or 'dlr', got {loss!r}")
        self.eps, self.steps, self.loss, self.n_restarts, self.rho = eps, steps, loss, n_restarts, rho

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "steps": self.steps, "loss": self.loss, "n_restarts": self.n_restarts}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        loss_fn = ce_loss if self.loss == "ce" else dlr_loss
        x_out = x.clone()
        logits = self.predict(x)
        if self.loss == "dlr" and logits.shape[1] < 3:
            raise ValueError(f"APGD with the DLR loss needs a model with >= 3 classes (it divides by z_pi1 - "
                             f"z_pi3), got {logits.shape[1]}; use loss='ce'")
        robust = logits.argmax(1) == y
        for _ in range(self.n_restarts):
            idx = robust.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            x_run, fooled = apgd_linf(self.model, x[idx], y[idx], loss_fn, self.eps, self.steps, self.rho,
                                      self.generator)
            x_out[idx] = x_run
            robust[idx[fooled]] = False
        return x_out


class APGDT(Attack):
    """Targeted APGD (APGD-T): targeted DLR towards the 2nd, 3rd, ... most likely classes in turn."""

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 100,
        n_target_classes: int = 9,
        n_restarts: int = 1,
        rho: float = 0.75,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, seed)
        _check_common(eps, steps, n_restarts, rho)
        if not isinstance(n_target_classes, int) or n_target_classes < 1:
            raise ValueError(f"n_target_classes must be an int >= 1, got {n_target_classes!r}")
        self.eps, self.steps, self.n_restarts, self.rho = eps, steps, n_restarts, rho
        self.n_target_classes = n_target_classes

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "steps": self.steps, "n_target_classes": self.n_target_classes,
                "n_restarts": self.n_restarts}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        logits = self.predict(x)
        if logits.shape[1] < 4:
            raise ValueError(f"APGD-T needs a model with >= 4 classes (targeted DLR), got {logits.shape[1]}")
        ranked = logits.argsort(dim=1, descending=True)
        x_out = x.clone()
        robust = logits.argmax(1) == y
        for rank in range(1, min(self.n_target_classes, logits.shape[1] - 1) + 1):
            for _ in range(self.n_restarts):
                idx = robust.nonzero().squeeze(1)
                if len(idx) == 0:
                    return x_out
                target = ranked[idx, rank]

                def loss_fn(z: Tensor, y_: Tensor, target: Tensor = target) -> Tensor:
                    return targeted_dlr_loss(z, y_, target)

                x_run, fooled = apgd_linf(self.model, x[idx], y[idx], loss_fn, self.eps, self.steps, self.rho,
                                          self.generator)
                x_out[idx] = x_run
                robust[idx[fooled]] = False
        return x_out
