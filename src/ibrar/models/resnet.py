"""ResNet18 in its CIFAR form (3x3 stem, no max pool), the paper's second architecture."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ibrar.models.registry import make_normalization, register_model, scaled


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; a 1x1 conv shortcut when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet.

    Robust layers: the last stage and the pooled feature, the analogue of VGG16's block5 + FC layers.
    """

    ib_layers = ("layer1", "layer2", "layer3", "layer4", "pool")
    robust_layers = ("layer4", "pool")
    last_conv = "layer4"
    penultimate = "pool"

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        width: float = 1.0,
        input_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4:
            raise ValueError(f"num_blocks: expected 4 stage lengths, got {list(num_blocks)}")
        if input_size < 8:
            raise ValueError(f"input_size: expected at least 8 (three 2x strides), got {input_size}")
        self.normalize = make_normalization(mean, std)
        stem = scaled(64, width)
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(True)
        )
        in_channels = stem
        for index, (base, blocks) in enumerate(zip((64, 128, 256, 512), num_blocks, strict=True), start=1):
            channels = scaled(base, width)
            stride = 1 if index == 1 else 2
            stage = [
                BasicBlock(in_channels if i == 0 else channels, channels, stride if i == 0 else 1)
                for i in range(blocks)
            ]
            self.add_module(f"layer{index}", nn.Sequential(*stage))
            in_channels = channels
        self.last_conv_channels = in_channels
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x))


@register_model("resnet18")
def resnet18(num_classes: int = 10, width: float = 1.0, input_size: int = 32, **kwargs: object) -> ResNet:
    """ResNet18 (BasicBlocks [2, 2, 2, 2]) for 32x32 or 64x64 inputs."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes, width=width, input_size=input_size, **kwargs)
