"""Square attack (Andriushchenko et al. 2020), L-inf: a score-based random search that uses no
gradients, so gradient masking cannot hide a model's weakness from it.

Start from vertical stripes of +-eps; each of ``n_queries`` iterations redraws one random square window
(side shrinking with the schedule of ``p``) to a random +-eps per channel and keeps it when the margin
``z_y - max_{j!=y} z_j`` drops. An example stops once misclassified.

As in the reference's standard AutoAttack (pyautoattack builds Square with ``resc_schedule=False``), the
schedule of ``p`` follows the iteration count itself; ``rescale_schedule=True`` stretches it over
``n_queries`` instead (torchattacks' default). Like pyautoattack 0.2.0's L-inf Square, a window draw that
happens to leave the image unchanged is kept as a spent query, not redrawn.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .base import Attack, check_positive, margin

# Iterations (on a 10 000-query scale) after which the window's area fraction p is halved again.
_P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, iteration: int, n_queries: int, rescale: bool = False) -> float:
    """The area fraction of the window at ``iteration``, halved at the published schedule's steps
    (on a 10,000-query scale stretched over ``n_queries`` when ``rescale``)."""
    step_count = int(iteration / n_queries * 10000) if rescale else iteration
    return p_init / 2 ** sum(step_count > step for step in _P_HALVINGS)


class Square(Attack):
    """Untargeted L-inf Square attack with the margin loss."""

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        n_queries: int = 5000,
        p_init: float = 0.8,
        rescale_schedule: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, seed)
        check_positive("eps", eps, allow_zero=True)
        if not isinstance(n_queries, int) or n_queries < 1:
            raise ValueError(f"n_queries must be an int >= 1, got {n_queries!r}")
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
        self.eps, self.n_queries, self.p_init = eps, n_queries, p_init
        self.rescale_schedule = rescale_schedule

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "n_queries": self.n_queries, "p_init": self.p_init,
                "rescale_schedule": self.rescale_schedule}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if x.dim() != 4 or min(x.shape[2:]) < 2:
            raise ValueError(f"Square needs images shaped (N, C, H, W) with H, W >= 2, got {tuple(x.shape)}")
        # Examples the model already gets wrong are returned as they are (as the reference does): the search
        # starts from random stripes, which could otherwise hand back an input the model gets right.
        correct = (self.predict(x).argmax(1) == y).nonzero().squeeze(1)
        x_out = x.clone()
        if len(correct):
            x_out[correct] = self._search(x[correct], y[correct])
        return x_out

    def _search(self, x: Tensor, y: Tensor) -> Tensor:
        n, channels, height, width = x.shape
        stripes = self.eps * (2 * self.randint(2, (n, channels, 1, width), x) - 1).to(x.dtype)
        x_best = (x + stripes).clamp(0.0, 1.0)
        margin_best = margin(self.predict(x_best), y)
        rows = torch.arange(height, device=x.device)
        cols = torch.arange(width, device=x.device)
        for iteration in range(self.n_queries):
            active = (margin_best > 0).nonzero().squeeze(1)
            if len(active) == 0:
                break
            x_a, x_best_a = x[active], x_best[active]
            p = square_fraction(self.p_init, iteration, self.n_queries, self.rescale_schedule)
            side = min(max(round(math.sqrt(p * height * width)), 1), min(height, width))
            # corners drawn in [0, H - side) as the reference draws them (0 when the window fills the image)
            top = self.randint(max(height - side, 1), (len(active), 1), x)
            left = self.randint(max(width - side, 1), (len(active), 1), x)
            in_rows = (rows >= top) & (rows < top + side)
            in_cols = (cols >= left) & (cols < left + side)
            window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (n, 1, H, W)
            signs = self.eps * (2 * self.randint(2, (len(active), channels, 1, 1), x) - 1).to(x.dtype)
            x_new = (x_a + torch.where(window, signs, x_best_a - x_a)).clamp(0.0, 1.0)
            margin_new = margin(self.predict(x_new), y[active])
            improved = margin_new < margin_best[active]
            x_best[active] = torch.where(improved[:, None, None, None], x_new, x_best_a)
            margin_best[active] = torch.where(improved, margin_new, margin_best[active])
        return x_best
