"""VGG16 with BatchNorm as the IB-RAR paper trains it: five conv blocks, two 4096-wide FC layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ibrar.models.registry import make_normalization, register_model, scaled

VGG16_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


def conv_block(in_channels: int, channels: Sequence[int]) -> nn.Sequential:
    """conv3x3-BN-ReLU for each entry of `channels`, then a 2x2 max pool."""
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        in_channels = out_channels
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG with BN; the paper's robust layers are the last conv block and both FC layers."""

    ib_layers = ("block1", "block2", "block3", "block4", "block5", "fc1", "fc2")
    robust_layers = ("block5", "fc1", "fc2")
    last_conv = "block5"
    penultimate = "fc2"

    def __init__(
        self,
        blocks: Sequence[Sequence[int]] = VGG16_BLOCKS,
        num_classes: int = 10,
        width: float = 1.0,
        input_size: int = 32,
        fc_width: int = 4096,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if len(blocks) != 5:
            raise ValueError(f"blocks: expected 5 conv blocks, got {len(blocks)}")
        if input_size % 32 != 0:
            raise ValueError(f"input_size: expected a multiple of 32 (five 2x poolings), got {input_size}")
        self.normalize = make_normalization(mean, std)
        in_channels = 3
        for index, channels in enumerate(blocks, start=1):
            widths = [scaled(c, width) for c in channels]
            self.add_module(f"block{index}", conv_block(in_channels, widths))
            in_channels = widths[-1]
        self.last_conv_channels = in_channels
        side = input_size // 32
        hidden = scaled(fc_width, width)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Sequential(
            nn.Linear(in_channels * side * side, hidden), nn.BatchNorm1d(hidden), nn.ReLU(True)
        )
        self.fc2 = nn.Sequential(nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(True))
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.block5(self.block4(self.block3(self.block2(self.block1(x)))))
        return self.classifier(self.fc2(self.fc1(self.flatten(x))))


@register_model("vgg16")
def vgg16(num_classes: int = 10, width: float = 1.0, input_size: int = 32, **kwargs: object) -> VGG:
    """VGG16-BN (13 conv layers); works for 32x32 (CIFAR, SVHN) and 64x64 (Tiny ImageNet) inputs."""
    return VGG(VGG16_BLOCKS, num_classes=num_classes, width=width, input_size=input_size, **kwargs)
