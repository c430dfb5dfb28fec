"""AutoAttack (Croce & Hein 2020), the reference for any claim of robustness here: a parameter-free
cascade of four complementary attacks, each run only on the examples the previous ones left robust.

``standard``: APGD-CE, APGD-T (targeted DLR), FAB-T, Square, with the original budgets (100 steps,
9 target classes, 5000 queries). torchattacks' AutoAttack runs 10-step APGD; pass ``steps=10`` to
reproduce it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .apgd import APGD, APGDT
from .base import Attack, check_positive
from .fab import FAB
from .square import Square

VERSIONS = ("standard", "apgd")


class AutoAttack(Attack):
    """``version="standard"`` is the four-attack cascade; ``"apgd"`` runs only APGD-CE and APGD-T
    (a cheaper, weaker check)."""

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        version: str = "standard",
        steps: int = 100,
        n_queries: int = 5000,
        n_target_classes: int = 9,
        seed: int | None = 0,
    ) -> None:
        super().__init__(model, seed)
        check_positive("eps", eps, allow_zero=True)
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        self.eps, self.version, self.steps, self.n_queries = eps, version, steps, n_queries
        self.n_target_classes = n_target_classes
        self.attacks: list[Attack] = [
            APGD(model, eps, steps=steps, loss="ce", seed=seed),
            APGDT(model, eps, steps=steps, n_target_classes=n_target_classes, seed=seed),
        ]
        if version == "standard":
            self.attacks += [
                FAB(model, eps, steps=steps, targeted=True, n_target_classes=n_target_classes, seed=seed),
                Square(model, eps, n_queries=n_queries, seed=seed),
            ]

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "version": self.version, "steps": self.steps, "n_queries": self.n_queries,
                "n_target_classes": self.n_target_classes}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        x_out = x.clone()
        robust = self.predict(x).argmax(1) == y
        for attack in self.attacks:
            idx = robust.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            x_adv = attack(x[idx], y[idx])
            fooled = self.predict(x_adv).argmax(1) != y[idx]
            x_out[idx[fooled]] = x_adv[fooled]
            robust[idx[fooled]] = False
        return x_out


