"""What every training objective shares: its output record, the base class the trainer calls, and the
inner attack run in eval mode.

A method only says how to make adversarial examples and how to turn logits into its loss; the trainer owns
the model's forward (so it can tap the layers the IB penalty needs) and hands it to the method as `forward`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ibrar.attacks.base import LossFn
from ibrar.attacks.pgd import pgd_linf
from ibrar.modes import eval_mode

PassName = Literal["clean", "adv"]
PASS_NAMES: tuple[str, ...] = ("clean", "adv")

# forward(inputs, pass_name) -> logits; the trainer records the tapped layer outputs under pass_name.
Forward = Callable[[Tensor, str], Tensor]


@dataclass
class MethodOutput:
    """One step's result: the loss to backpropagate, logits for train accuracy, detached parts to log."""

    loss: Tensor
    logits: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


def check_nonnegative(name: str, value: object) -> float:
    """`value` as a float, or a ValueError naming `name` when it is not a number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
    return float(value)


def check_steps(steps: object) -> int:
    """The number of attack steps, or a ValueError when it is not an int >= 0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: expected an int >= 0, got {steps!r}")
    return steps


def kl_per_example(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(softmax(logits_p) || softmax(logits_q)) for each example, summed over classes: shape (m,)."""
    log_p = F.log_softmax(logits_p, dim=1)
    log_q = F.log_softmax(logits_q, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


class Method:
    """A training objective. Subclasses set the class attributes and implement `loss` (and `perturb`).

    `train_pass` names the forward pass ("clean" or "adv") whose layer outputs the IB terms use by default.
    """

    name: ClassVar[str] = ""
    adversarial: ClassVar[bool] = False
    train_pass: ClassVar[str] = "clean"

    def attach(self, model: nn.Module) -> None:
        """Called once by the trainer with the model it trains; only methods that read model state need it."""

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor | None:
        """The inner maximisation: adversarial inputs for (x, y), or None for methods without one."""
        return None

    def loss(self, forward: Forward, x: Tensor, y: Tensor, x_adv: Tensor | None) -> MethodOutput:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The method's hyper-parameters, for run records."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class AdversarialMethod(Method):
    """A method trained on L-inf PGD examples; holds the threat model and runs the attack in eval mode."""

    adversarial: ClassVar[bool] = True
    train_pass: ClassVar[str] = "adv"

    def __init__(self, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10) -> None:
        self.eps = check_nonnegative("eps", eps)
        self.alpha = check_nonnegative("alpha", alpha)
        self.steps = check_steps(steps)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "alpha": self.alpha, "steps": self.steps}

    def run_pgd(
        self,
        model: nn.Module,
        x: Tensor,
        target: Tensor,
        loss_fn: LossFn,
        generator: torch.Generator | None = None,
        x_init: Tensor | None = None,
    ) -> Tensor:
        """PGD maximising `loss_fn(model(x_adv), target)` from a uniform start (or `x_init`), in eval mode."""
        with eval_mode(model):
            x_adv = pgd_linf(
                model, x, target, loss_fn, self.eps, self.alpha, self.steps,
                random_start=True, generator=generator, x_init=x_init,
            )
        return x_adv.detach()

    @staticmethod
    def require_adv(x_adv: Tensor | None) -> Tensor:
        if x_adv is None:
            raise ValueError("x_adv: this method trains on adversarial examples; pass perturb()'s output")
        return x_adv
