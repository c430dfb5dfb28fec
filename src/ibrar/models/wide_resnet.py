"""WideResNet (pre-activation blocks), the usual backbone of adversarial-training baselines.

BatchNorm keeps PyTorch's default momentum 0.1; some widely copied ports set 0.9, which makes the
running statistics track almost only the last batch and silently hurts evaluation accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ibrar.models.registry import make_normalization, register_model, scaled


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice; the shortcut shares the first BN-ReLU when it needs a 1x1 conv."""

    def __init__(self, in_channels: int, channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))
        return out + residual


class WideResNet(nn.Module):
    """WRN-depth-k. The mask goes on `relu` (the final activated feature map, what the pool sees)."""

    ib_layers = ("block1", "block2", "block3", "pool")
    robust_layers = ("block3", "pool")
    last_conv = "relu"
    penultimate = "pool"

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        width: float = 1.0,
        input_size: int = 32,
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth: expected 6n + 4 with n >= 1 (e.g. 28, 34), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor: expected a positive integer, got {widen_factor}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        if input_size < 4:
            raise ValueError(f"input_size: expected at least 4 (two 2x strides), got {input_size}")
        blocks_per_stage = (depth - 4) // 6
        self.normalize = make_normalization(mean, std)
        stem = scaled(16, width)
        self.conv1 = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        in_channels = stem
        for index, (base, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            channels = scaled(base * widen_factor, width)
            stage = [
                PreActBlock(in_channels if i == 0 else channels, channels, stride if i == 0 else 1, dropout)
                for i in range(blocks_per_stage)
            ]
            self.add_module(f"block{index}", nn.Sequential(*stage))
            in_channels = channels
        self.last_conv_channels = in_channels
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.normalize(x))
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(self.pool(self.relu(self.bn(x))))


def wide_resnet(
    depth: int,
    widen_factor: int,
    num_classes: int = 10,
    width: float = 1.0,
    input_size: int = 32,
    **kwargs: object,
) -> WideResNet:
    """Generic WRN-`depth`-`widen_factor` builder (depth = 6n + 4)."""
    return WideResNet(
        depth, widen_factor, num_classes=num_classes, width=width, input_size=input_size, **kwargs
    )


@register_model("wrn28_10")
def wrn28_10(num_classes: int = 10, width: float = 1.0, input_size: int = 32, **kwargs: object) -> WideResNet:
    """WRN-28-10."""
    return wide_resnet(28, 10, num_classes=num_classes, width=width, input_size=input_size, **kwargs)


@register_model("wrn34_10")
def wrn34_10(num_classes: int = 10, width: float = 1.0, input_size: int = 32, **kwargs: object) -> WideResNet:
    """WRN-34-10, the TRADES / MART benchmark backbone."""
    return wide_resnet(34, 10, num_classes=num_classes, width=width, input_size=input_size, **kwargs)
