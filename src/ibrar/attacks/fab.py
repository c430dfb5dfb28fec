"""FAB (Croce & Hein 2020), L-inf: a minimum-norm attack that walks along projections onto the
linearised decision boundary, part of AutoAttack as FAB-T.

Each step linearises the closest boundary (or, targeted, the boundary to one class), projects both
the current iterate and the original point onto it within the box [0, 1], moves to a convex
combination of the two (biased towards the original by at most ``alpha_max``, extrapolated by
``eta``) and, once adversarial, steps back towards the original by ``beta`` to shrink the norm.
Only adversarials within ``eps`` are returned; other examples keep the clean input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Attack, check_positive


def project_onto_hyperplane_linf(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Smallest L-inf step ``d`` with ``<w, t + d> = b`` and ``t + d`` in [0, 1] (rows are examples).

    Moving each coordinate by at most ``r`` in its useful direction changes ``<w, .>`` by
    ``sum_i |w_i| min(r, room_i)``, a piecewise-linear increasing function of ``r``; its sorted
    breakpoints give the smallest sufficient ``r`` in closed form. When even the whole box cannot
    reach the hyperplane, the step goes as far towards it as the box allows.
    """
    need = b - (w * t).sum(1)
    direction = torch.sign(need)[:, None] * torch.sign(w)
    room = torch.where(direction > 0, 1 - t, t)
    weight = w.abs()
    room_sorted, order = room.sort(dim=1)
    weight_sorted = weight.gather(1, order)
    cum_wr = (weight_sorted * room_sorted).cumsum(1)
    cum_w = weight_sorted.cumsum(1)
    total_w = cum_w[:, -1:]
    reach = cum_wr + room_sorted * (total_w - cum_w)  # what radius room_sorted[:, k] achieves
    target = need.abs()[:, None]
    k = (reach < target).sum(1, keepdim=True)
    k_prev = (k - 1).clamp_min(0)
    wr_before = torch.where(k > 0, cum_wr.gather(1, k_prev), torch.zeros_like(target))
    w_before = torch.where(k > 0, cum_w.gather(1, k_prev), torch.zeros_like(target))
    radius = (target - wr_before) / (total_w - w_before).clamp_min(1e-12)
    radius = torch.where(k < t.shape[1], radius, room_sorted[:, -1:])
    return direction * torch.minimum(radius, room)


class FAB(Attack):
    """L-inf FAB; ``targeted=True`` gives FAB-T (the top ``n_target_classes`` other classes in turn)."""

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 10,
        n_restarts: int = 1,
        targeted: bool = False,
        n_target_classes: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, seed)
        check_positive("eps", eps, allow_zero=True)
        check_positive("eta", eta)
        check_positive("alpha_max", alpha_max, allow_zero=True)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        if not isinstance(n_restarts, int) or n_restarts < 1:
            raise ValueError(f"n_restarts must be an int >= 1, got {n_restarts!r}")
        if not isinstance(n_target_classes, int) or n_target_classes < 1:
            raise ValueError(f"n_target_classes must be an int >= 1, got {n_target_classes!r}")
        if not 0 < beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta!r}")
        self.eps, self.steps, self.n_restarts, self.targeted = eps, steps, n_restarts, targeted
        self.n_target_classes, self.alpha_max, self.eta, self.beta = n_target_classes, alpha_max, eta, beta

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "steps": self.steps, "n_restarts": self.n_restarts,
                "targeted": self.targeted, "n_target_classes": self.n_target_classes,
                "alpha_max": self.alpha_max, "eta": self.eta, "beta": self.beta}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        logits = self.predict(x)
        robust = logits.argmax(1) == y
        x_out = x.clone()
        if self.targeted:
            ranked = logits.argsort(dim=1, descending=True)
            targets = [ranked[:, r] for r in range(1, min(self.n_target_classes, logits.shape[1] - 1) + 1)]
        else:
            targets = [None]
        for target in targets:
            for restart in range(self.n_restarts):
                idx = robust.nonzero().squeeze(1)
                if len(idx) == 0:
                    return x_out
                x_adv, dist = self._run(x[idx], y[idx], None if target is None else target[idx], restart > 0)
                success = dist <= self.eps
                x_out[idx[success]] = x_adv[success]
                robust[idx[success]] = False
        return x_out

    def _boundary(self, x1: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        """The linearised boundary to attack at ``x1``: ``f + <w, z - x1> = 0``; returns ``(f, w)``."""
        rows = torch.arange(len(x1), device=x1.device)
        with torch.enable_grad():
            x_var = x1.detach().requires_grad_(True)
            logits = self.model(x_var)
            if target is not None:
                f = logits[rows, target] - logits[rows, y]
                (w,) = torch.autograd.grad(f.sum(), x_var)
                return f.detach(), w.flatten(1)
            grads = [
                torch.autograd.grad(logits[:, k].sum(), x_var, retain_graph=k < logits.shape[1] - 1)[0]
                for k in range(logits.shape[1])
            ]
        jac = torch.stack(grads, 1).flatten(2)  # (B, K, D)
        df = (logits - logits[rows, y][:, None]).detach()
        dg = jac - jac[rows, y][:, None]
        dist = df.abs() / (dg.abs().sum(-1) + 1e-12)
        dist[rows, y] = float("inf")
        closest = dist.argmin(1)
        return df[rows, closest], dg[rows, closest]

    def _run(self, x: Tensor, y: Tensor, target: Tensor | None, random_start: bool) -> tuple[Tensor, Tensor]:
        """One FAB run; returns the smallest adversarial found per example and its L-inf distance
        (``inf`` when none was found)."""
        x0 = x.flatten(1)
        best = x0.clone()
        best_dist = torch.full((len(x),), float("inf"), device=x.device, dtype=x.dtype)
        x1 = x0.clone()
        if random_start:
            t = 2 * self.rand(x0.shape, x0) - 1
            x1 = (x0 + 0.5 * self.eps * t / t.abs().amax(1, keepdim=True)).clamp(0.0, 1.0)
        for _ in range(self.steps):
            f, w = self._boundary(x1.view_as(x), y, target)
            b = (w * x1).sum(1) - f
            d1 = project_onto_hyperplane_linf(x1, w, b)
            d2 = project_onto_hyperplane_linf(x0, w, b)
            n1 = d1.abs().amax(1).clamp_min(1e-8)
            n2 = d2.abs().amax(1).clamp_min(1e-8)
            alpha = (n1 / (n1 + n2)).clamp(0.0, self.alpha_max)[:, None]
            x1 = ((1 - alpha) * (x1 + self.eta * d1) + alpha * (x0 + self.eta * d2)).clamp(0.0, 1.0)

            is_adv = self.predict(x1.view_as(x)).argmax(1) != y
            dist = (x1 - x0).abs().amax(1)
            better = is_adv & (dist < best_dist)
            best = torch.where(better[:, None], x1, best)
            best_dist = torch.where(better, dist, best_dist)
            x1 = torch.where(is_adv[:, None], x0 + self.beta * (x1 - x0), x1)
        return best.view_as(x), best_dist


