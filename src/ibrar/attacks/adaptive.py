"""PGD_AD, the adaptive attack of the paper's appendix: PGD on the whole IB-RAR training loss.

A defence that adds a penalty to its loss should be attacked through that penalty too: the
attacker maximises ``CE(f(x_adv), y) + alpha * sum_l HSIC(X, T_l) - beta * sum_l HSIC(Y, T_l)``,
with X the clean batch and ``T_l`` the IB layers' outputs on ``x_adv``. HSIC is a batch statistic,
so results depend (a little) on the batch the attack sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ibrar.regularizer import IBRegularizer
from ibrar.taps import tap_layers

from .base import Attack, check_positive
from .pgd import pgd_linf


class AdaptivePGD(Attack):
    """L-inf PGD maximising ``CE + regularizer(x_clean, y, features).loss`` (the training objective)."""

    def __init__(
        self,
        model: nn.Module,
        regularizer: IBRegularizer,
        layers: Sequence[str] | None = None,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        random_start: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, seed)
        if not callable(regularizer):
            raise ValueError(f"regularizer must be an IBRegularizer, got {type(regularizer).__name__}")
        check_positive("eps", eps, allow_zero=True)
        check_positive("alpha", alpha, allow_zero=True)
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {steps!r}")
        self.regularizer = regularizer
        self.layers = tuple(layers) if layers is not None else tuple(regularizer.layers)
        if not self.layers:
            raise ValueError("layers must name at least one layer of the model")
        self.eps, self.alpha, self.steps, self.random_start = eps, alpha, steps, random_start

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "alpha": self.alpha, "steps": self.steps, "layers": list(self.layers),
                "reg_alpha": self.regularizer.alpha, "reg_beta": self.regularizer.beta}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        with tap_layers(self.model, self.layers) as features:

            def ib_rar_loss(logits: Tensor, labels: Tensor) -> Tensor:
                # The taps were filled by the forward that produced these logits. A batch of one (an evaluation's
                # last) has centred Gram matrices of zero, so every HSIC is 0 there: the loss is CE alone.
                if len(labels) < 2:
                    return F.cross_entropy(logits, labels)
                return F.cross_entropy(logits, labels) + self.regularizer(x, labels, features).loss

            return pgd_linf(self.model, x, y, ib_rar_loss, self.eps, self.alpha, self.steps,
                            self.random_start, self.generator)
