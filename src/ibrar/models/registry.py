"""Model registry: one name -> one builder, so configs and the CLI can pick a model by string."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

ModelBuilder = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator that makes a builder reachable through `create_model(name)`."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"name: model {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return add


def list_models() -> list[str]:
    """Names accepted by `create_model`, sorted."""
    return sorted(_REGISTRY)


def scaled(channels: int, width: float) -> int:
    """Channel count after the width multiplier, never below one."""
    return max(1, round(channels * width))


class InputNormalization(nn.Module):
    """Per-channel (x - mean) / std inside the model, so attacks keep working in pixel space [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        if mean_t.numel() != std_t.numel():
            raise ValueError(f"std: expected {mean_t.numel()} values like mean, got {std_t.numel()}")
        if bool((std_t <= 0).any()):
            raise ValueError(f"std: expected positive values, got {list(std)}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def make_normalization(mean: Sequence[float] | None, std: Sequence[float] | None) -> nn.Module:
    """The input normalisation layer, or identity when neither mean nor std is given (the paper's setting)."""
    if mean is None and std is None:
        return nn.Identity()
    if mean is None:
        mean = [0.0] * len(std)
    if std is None:
        std = [1.0] * len(mean)
    return InputNormalization(mean, std)


def create_model(
    name: str, num_classes: int = 10, width: float = 1.0, input_size: int = 32, **kwargs: object
) -> nn.Module:
    """Build a registered model; extra keyword arguments (e.g. `mean`, `std`) go to its builder.

    Every model takes inputs in [0, 1] of shape (N, 3, input_size, input_size) and carries the
    attributes `ib_layers`, `robust_layers`, `last_conv`, `last_conv_channels` and `penultimate`.
    """
    if name not in _REGISTRY:
        raise ValueError(f"name: expected one of {list_models()}, got {name!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
    if not width > 0:
        raise ValueError(f"width: expected a positive number, got {width!r}")
    if not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size: expected a positive integer, got {input_size!r}")
    return _REGISTRY[name](num_classes=num_classes, width=width, input_size=input_size, **kwargs)
