"""A model's modes for a block, given back as they were: eval mode submodule by submodule, and frozen parameters.

Attacks, the monitor, the mask's fit and every probe of a model run it in eval mode; a caller may have left some
submodules in another mode than the model's (a frozen BatchNorm inside a training model), and ``model.train(was)``
would flip those too. So the modes are saved per submodule and each gets its own back, even after an error.
Code that is not ibrar's own (the reference AutoAttack's FAB calls ``backward()``) runs with the parameters frozen,
so that no ``.grad`` of the model is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block, then restore each one's own previous mode.

    Inside it BatchNorm uses (and never updates) its running statistics and dropout is off.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """No parameter requires a gradient in the block, so a ``backward()`` inside writes no ``.grad``; then each
    parameter gets its own ``requires_grad`` and its ``.grad`` back."""
    saved = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    for p, _, _ in saved:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, requires_grad, grad in saved:
            p.requires_grad_(requires_grad)
            p.grad = grad
