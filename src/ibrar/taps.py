"""Capture the outputs of named layers of any model, without touching the model's code.

The IB penalty needs hidden representations T_l; forward hooks let it read them from torchvision, timm or
user models alike. Names are those of `model.named_modules()` (DistributedDataParallel and torch.compile
wrappers are seen through, so the same names work with and without them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside any DistributedDataParallel / DataParallel / torch.compile wrappers, or the model."""
    while True:
        wrapped = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if not isinstance(wrapped, nn.Module):
            wrapped = getattr(model, "module", None)  # (Distributed)DataParallel
        if not isinstance(wrapped, nn.Module):
            return model
        model = wrapped


def find_modules(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Look up named submodules; a missing name is an error that lists the valid ones."""
    if isinstance(names, str):
        names = [names]
    available = dict(unwrap(model).named_modules())
    missing = [n for n in names if n not in available or n == ""]
    if missing:
        valid = ", ".join(n for n in available if n)
        raise ValueError(f"layers: {missing} not found in {type(unwrap(model)).__name__}; valid names: {valid}")
    return {n: available[n] for n in names}


def _first_tensor(output: object, name: str) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise ValueError(f"layers: the output of {name!r} is a {type(output).__name__}, not a tensor; tap another layer")


@contextmanager
def tap_layers(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Within the block, every forward of `model` stores the output of each named layer in the yielded dict.

    The stored tensors keep their autograd graph (the penalty backpropagates through them). Hooks are removed
    on exit, also when the block raises.
    """
    modules = find_modules(model, names)
    captured: dict[str, Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            captured[name] = _first_tensor(output, name)

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
