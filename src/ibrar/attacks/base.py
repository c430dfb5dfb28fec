"""The one base class every attack shares.

It owns everything that is not the attack's algorithm, so that each attack file reads like the
paper's pseudocode: input checks, eval mode during the attack (restored afterwards, so BatchNorm
statistics never move), seeding, input gradients that never touch the parameters' ``.grad``, and
the final clamp to the valid image box and the threat model's ball.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ibrar.modes import eval_mode

LossFn = Callable[[Tensor, Tensor], Tensor]


def input_gradient(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradient of ``loss_fn(model(x), y)`` (summed over the batch) with respect to ``x`` only.

    Returns ``(grad, loss, logits)``, all detached; ``loss`` is whatever ``loss_fn`` returned
    (per-example or summed). ``torch.autograd.grad`` is used so that the parameters' ``.grad``
    fields are never written.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        loss = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return grad.detach(), loss.detach(), logits.detach()


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example ``z_y - max_{j != y} z_j``: positive while the example is still classified right."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return true - other


def cw_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example Carlini-Wagner margin loss to maximise: ``max_{j != y} z_j - z_y``."""
    return -margin(logits, y)


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example cross-entropy to maximise."""
    return F.cross_entropy(logits, y, reduction="none")


def linf_box(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The L-inf ball of radius ``eps`` around ``x`` intersected with the box [0, 1], as per-pixel bounds. An
    iterative attack computes them once; each projection is then a single clamp instead of five ops."""
    return (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)


def project_linf(x_adv: Tensor, x: Tensor, eps: float, box: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Project onto the L-inf ball of radius ``eps`` around ``x`` intersected with the box [0, 1] (``box``:
    `linf_box(x, eps)`, when the caller has it). Exactly clip(x_adv, x - eps, x + eps) clamped to [0, 1]: a clamp
    to [0, 1] is monotone, so it moves inside the clip onto both bounds (tests/test_attacks.py)."""
    low, high = box if box is not None else linf_box(x, eps)
    return torch.clamp(x_adv, low, high)


def batch_view(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-example vector so that it broadcasts against a batch shaped like ``like``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive number (or zero when allowed)."""
    if not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")


class Attack:
    """Base class: ``attack(x, y) -> x_adv`` with ``x`` float in [0, 1] and ``y`` int64 labels.

    Subclasses implement :meth:`perturb` and set ``norm`` to ``"linf"`` (the output is then
    projected onto the ``eps`` ball) or ``"l2"`` (only clamped to [0, 1]).
    """

    norm: str = "linf"
    eps: float = 0.0

    @property
    def threat_model(self) -> tuple[str, float | None]:
        """``(norm, eps)``: the ball the attack searches; L2 attacks here are unbounded (eps None)."""
        return (self.norm, float(self.eps) if self.norm == "linf" else None)

    def __init__(self, model: nn.Module, seed: int | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self.model = model
        self.seed = seed
        self.generator: torch.Generator | None = None
        self._num_classes: int | None = None

    # -- what subclasses implement -------------------------------------------------------------
    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        """The attack's algorithm on a validated batch; the model is already in eval mode."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The attack's parameters, for reports."""
        return {}

    # -- helpers for subclasses ----------------------------------------------------------------
    def rand(self, shape: tuple[int, ...] | torch.Size, like: Tensor) -> Tensor:
        """Uniform [0, 1) draw from the attack's generator (global RNG when unseeded)."""
        return torch.rand(shape, generator=self.generator, device=like.device, dtype=like.dtype)

    def randint(self, high: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """Integer draw in [0, high) from the attack's generator."""
        return torch.randint(high, shape, generator=self.generator, device=like.device)

    def uniform_ball(self, x: Tensor, eps: float) -> Tensor:
        """A uniform random point of the L-inf ball of radius ``eps`` around ``x``, inside [0, 1]."""
        return (x + eps * (2 * self.rand(x.shape, x) - 1)).clamp(0.0, 1.0)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The model's logits, without a graph."""
        return self.model(x)

    # -- the call -------------------------------------------------------------------------------
    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        self._check_inputs(x, y)
        if x.shape[0] == 0:
            return x.clone()
        self.generator = None
        if self.seed is not None:
            self.generator = torch.Generator(device=x.device).manual_seed(self.seed)
        try:
            with eval_mode(self.model):
                self._check_labels(x, y)
                x_adv = self.perturb(x.detach(), y.detach()).detach()
        finally:
            self.generator = None
        if self.norm == "linf":
            return project_linf(x_adv, x.detach(), float(self.eps))
        return x_adv.clamp(0.0, 1.0)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def _check_inputs(self, x: Tensor, y: Tensor) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor with values in [0, 1], got {_describe(x)}")
        if x.dtype in (torch.float16, torch.bfloat16):
            raise ValueError(f"x must be float32 or float64, got {x.dtype}: in half precision x +- eps rounds out "
                             "of the eps ball and CW's optimiser underflows; pass x.float() (a half-precision "
                             "model can run under torch.autocast)")
        if x.dim() < 2:
            raise ValueError(f"x must be a batch shaped (N, ...), got shape {tuple(x.shape)}")
        if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.dim() != 1:
            raise ValueError(f"y must be a 1-d int64 tensor of class indices, got {_describe(y)}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}")
        if x.shape[0] and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"x must have values in [0, 1], got min {x.min().item():.4g} and max {x.max().item():.4g}"
            )
        if y.device != x.device:
            raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")

    def _check_labels(self, x: Tensor, y: Tensor) -> None:
        if self._num_classes is None:
            self._num_classes = int(self.predict(x[:1]).shape[1])
        if y.min() < 0 or y.max() >= self._num_classes:
            raise ValueError(
                f"y must hold class indices in [0, {self._num_classes}), "
                f"got min {y.min().item()} and max {y.max().item()}"
            )


def _describe(t: object) -> str:
    if isinstance(t, Tensor):
        return f"tensor of dtype {t.dtype} and shape {tuple(t.shape)}"
    return type(t).__name__
