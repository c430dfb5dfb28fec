"""A model's train/eval modes, switched for a block and given back submodule by submodule.

Attacks, the monitor, the mask's fit and every probe of a model run it in eval mode; a caller may have left some
submodules in another mode than the model's (a frozen BatchNorm inside a training model), and ``model.train(was)``
would flip those too. So the modes are saved per submodule and each gets its own back, even after an error.
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
