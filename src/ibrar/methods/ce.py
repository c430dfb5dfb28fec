"""Plain cross-entropy on clean inputs: the baseline without adversarial training (and IB-RAR's base then)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor
from torch.nn import functional as F

from ibrar.methods.base import Forward, Method, MethodOutput


class CrossEntropy(Method):
    """Loss = CE(f(x), y); no inner attack."""

    name: ClassVar[str] = "ce"
    adversarial: ClassVar[bool] = False
    train_pass: ClassVar[str] = "clean"

    def loss(self, forward: Forward, x: Tensor, y: Tensor, x_adv: Tensor | None = None) -> MethodOutput:
        logits = forward(x, "clean")
        ce = F.cross_entropy(logits, y)
        return MethodOutput(ce, logits, {"ce": ce.detach()})
